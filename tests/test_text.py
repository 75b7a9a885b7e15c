"""LRA Text: byte tokenisation (ByteTextEncoder ids), truncation, splits, the not-prepared
error, and one tiny end-to-end run, all under tfds.testing.mock_data (no download)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import transformer_text
from lra import text
from lra.tasks import load_task

REVIEWS = {"train": [("Great film \u00e9!", 1), ("bad", 0), ("x" * 50, 1)],
           "test": [("meh", 0), ("\u2603 snow", 1)]}


def tiny_config(tmp_path, **data):
  config = transformer_text.get_config("tiny")
  with config.unlocked():
    config.cache_dir = str(tmp_path / "cache")
    config.data_dir = str(tmp_path / "tfds")
    for key, value in data.items():
      config.data[key] = value
  return config


def fake_imdb(self, split, **kwargs):
  del self, kwargs
  rows = REVIEWS[str(split)]
  return tf.data.Dataset.from_tensor_slices(
      {"text": [r[0] for r in rows], "label": np.array([r[1] for r in rows], np.int64)})


def test_ids_are_bytetextencoder_ids():
  sample = "Hi \u00e9\u2603"
  ids, lengths = text.encode_bytes([sample.encode()], 16)
  expected = tfds.deprecated.text.ByteTextEncoder().encode(sample)
  assert lengths.tolist() == [len(sample.encode())] == [len(expected)]
  assert ids[0, :lengths[0]].tolist() == expected
  assert ids[0, :4].tolist() == [ord("H") + 1, ord("i") + 1, ord(" ") + 1, 0xC3 + 1]
  assert (ids[0, lengths[0]:] == 0).all()
  assert ids.dtype == np.uint8 and text.VOCAB_SIZE == 257


def test_truncation_and_byte_255():
  ids, lengths = text.encode_bytes([b"abcdef", b"\xff\x00"], 4)
  assert lengths.tolist() == [4, 2]
  assert ids.dtype == np.uint16  # id 256 does not fit uint8
  assert ids.tolist() == [[98, 99, 100, 101], [256, 1, 0, 0]]
  with pytest.raises(ValueError, match="max_length"):
    text.encode_bytes([b"a"], 0)


def test_mock_has_the_features_we_read(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    example = next(iter(tfds.as_numpy(tfds.load(text.DATASET, split="train",
                                                 data_dir=str(tmp_path)))))
  assert isinstance(example["text"], bytes)
  assert example["label"] in (0, 1)


def test_splits_tokens_and_cache(tmp_path):
  config = tiny_config(tmp_path, max_length=8)
  with tfds.testing.mock_data(as_dataset_fn=fake_imdb):
    task = load_task(config)
  assert task.sizes() == {"train": 3, "validation": 2, "test": 2}
  assert task.vocab_size == 257 and task.num_classes == 2 and not task.pair
  train = task.splits["train"]
  assert train.lengths.tolist() == [8, 3, 8]  # truncated to config.data.max_length
  assert train.inputs[1].tolist() == [c + 1 for c in b"bad"] + [0] * 5
  assert train.targets.tolist() == [1, 0, 1]
  test = task.splits["test"]  # validation = test = IMDb test
  assert test.inputs[1, :3].tolist() == [0xE2 + 1, 0x98 + 1, 0x83 + 1]
  np.testing.assert_array_equal(task.splits["validation"].inputs, test.inputs)
  batch = train.batch(np.arange(3))
  assert batch["mask"].sum(1).tolist() == [8, 3, 8]
  cached = load_task(config)  # served from the .npy cache: no TFDS needed now
  assert isinstance(cached.splits["train"].inputs, np.memmap)
  np.testing.assert_array_equal(cached.splits["train"].inputs, train.inputs)


def test_a_tfds_split_with_no_examples_is_an_error_naming_it(tmp_path):
  def no_test_reviews(self, split, **kwargs):
    if str(split) != "test":
      return fake_imdb(self, split, **kwargs)
    return tf.data.Dataset.from_tensor_slices(
        {"text": tf.constant([], tf.string), "label": np.zeros(0, np.int64)})

  config = tiny_config(tmp_path)
  with tfds.testing.mock_data(as_dataset_fn=no_test_reviews):
    with pytest.raises(ValueError, match=rf"TFDS {text.DATASET} 'test' in "
                       rf"{tmp_path / 'tfds'} has no examples"):
      load_task(config)
  assert not list((tmp_path / "cache").rglob("*.npy"))  # nothing cached: fixing TFDS is enough


def test_unprepared_data_names_the_prepare_command(tmp_path):
  config = tiny_config(tmp_path)
  with pytest.raises(FileNotFoundError, match=r"python -m lra\.prepare --tasks=text "
                     rf"--data_dir={tmp_path / 'tfds'}"):
    load_task(config)


def test_tiny_end_to_end(tmp_path):
  from train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = tiny_config(tmp_path)
  with tfds.testing.mock_data(num_examples=48):
    results = train_and_evaluate(config, tmp_path / "run")
  assert results["steps"] == 12 and results["task"] == "text"
  assert results["splits"]["test"]["examples"] == 48
  assert 0.0 <= results["splits"]["test"]["accuracy"] <= 1.0
