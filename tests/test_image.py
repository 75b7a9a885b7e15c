"""LRA Image: LRA's grayscale conversion, row-major pixel tokens, no padding mask (a black
pixel is a real token), the 90/10 train/validation cut, and one tiny end-to-end run, under
tfds.testing.mock_data (no download)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import transformer_image
from lra import image
from lra.tasks import load_task

LUMA = np.array([0.2989, 0.5870, 0.1140], np.float32)


def tiny_config(tmp_path):
  config = transformer_image.get_config("tiny")
  with config.unlocked():
    config.cache_dir = str(tmp_path / "cache")
    config.data_dir = str(tmp_path / "tfds")
  return config


def fake_cifar(self, split, **kwargs):
  """20 train / 3 test images; image i is filled with value 10*i except a black pixel at
  (0, 1); the label is i % 10."""
  del self, kwargs
  n = {"train": 20, "test": 3}[str(split)]
  images = np.repeat((np.arange(n, dtype=np.uint8) * 10)[:, None, None, None], 32 * 32 * 3)
  images = images.reshape(n, 32, 32, 3)
  images[:, 0, 1] = 0
  return tf.data.Dataset.from_tensor_slices(
      {"image": images, "label": np.arange(n, dtype=np.int64) % 10,
       "id": np.array([f"{split}_{i}".encode() for i in range(n)])})


def test_grayscale_is_lras_conversion():
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  pixels[0, 0, 0], pixels[0, 0, 1], pixels[0, 0, 2] = 0, 255, (255, 0, 0)
  tokens = image.grayscale_tokens(pixels)
  assert tokens.shape == (2, 1024) and tokens.dtype == np.uint8
  assert tokens[0, 0] == 0 and tokens[0, 1] == 255
  assert tokens[0, 2] == int(0.2989 * 255.5)  # pure red: truncation of luma * 255.5
  # tf.image.rgb_to_grayscale == floor(((rgb / 255) . luma) * 255.5), flattened row-major
  expected = np.floor((pixels.astype(np.float32) / 255) @ LUMA * 255.5).reshape(2, -1)
  np.testing.assert_array_equal(tokens, expected.astype(np.uint8))
  with pytest.raises(ValueError, match="RGB"):
    image.grayscale_tokens(pixels[..., :1])


def test_mock_has_the_features_we_read(tmp_path):
  with tfds.testing.mock_data(num_examples=2):
    example = next(iter(tfds.as_numpy(tfds.load(image.DATASET, split="train",
                                                 data_dir=str(tmp_path)))))
  assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.uint8
  assert 0 <= example["label"] < 10


def test_splits_tokens_and_unmasked_black_pixels(tmp_path):
  assert image.train_cut(50_000) == 45_000  # train[:90%] of CIFAR-10
  config = tiny_config(tmp_path)
  with tfds.testing.mock_data(as_dataset_fn=fake_cifar):
    task = load_task(config)
  assert task.sizes() == {"train": 18, "validation": 2, "test": 3}
  assert task.vocab_size == 256 and task.num_classes == 10 and task.max_length == 1024
  # validation is the last 10% of TFDS train, in TFDS order
  assert task.splits["validation"].targets.tolist() == [8, 9]
  train = task.splits["train"]
  assert train.inputs[0].max() == 0  # image 0 is all black ...
  batch = train.batch(np.arange(4))
  assert batch["mask"].all()  # ... and every pixel is still a real token
  assert batch["inputs"][:, 1].tolist() == [0, 0, 0, 0]
  assert batch["inputs"][3, 0] == image.grayscale_tokens(np.full((1, 1, 1, 3), 30, np.uint8))[0, 0]


@pytest.mark.parametrize("sizes,message", [
    ({"train": 20, "test": 0}, r"TFDS cifar10:3\.0\.2 'test' in .* has no examples"),
    # one train image: train[:90%] is empty (the shared load-time check names it)
    ({"train": 1, "test": 3},
     r"task image: split 'train' has no examples \(from TFDS cifar10:3\.0\.2 'train\[:90%\]'"),
])
def test_a_split_with_no_examples_is_an_error_naming_it(tmp_path, sizes, message):
  def few_images(self, split, **kwargs):
    rows = fake_cifar(self, split, **kwargs)
    return rows.take(sizes[str(split)])

  with tfds.testing.mock_data(as_dataset_fn=few_images):
    with pytest.raises(ValueError, match=message):
      load_task(tiny_config(tmp_path))


def test_wrong_length_is_a_config_error(tmp_path):
  config = tiny_config(tmp_path)
  with config.unlocked():
    config.data.max_length = 512
  with pytest.raises(ValueError, match="config.data.max_length=512"):
    load_task(config)


def test_unprepared_data_names_the_prepare_command(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"python -m lra\.prepare --tasks=image"):
    load_task(tiny_config(tmp_path))


def test_tiny_end_to_end(tmp_path):
  from train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = tiny_config(tmp_path)
  with tfds.testing.mock_data(num_examples=20):
    results = train_and_evaluate(config, tmp_path / "run")
  assert results["steps"] == 12 and results["task"] == "image"
  assert results["task_sizes"] == {"train": 18, "validation": 2, "test": 20}
  assert 0.0 <= results["splits"]["test"]["accuracy"] <= 1.0
