"""LRA Image: CIFAR-10 as a sequence of 1024 grayscale pixels (Tay et al. 2021, sec. 2.2.4).

Data: TFDS `cifar10` (version pinned). Each image goes through `tf.image.rgb_to_grayscale`
exactly as LRA's pipeline did: ITU-R 601 luma weights (0.2989, 0.5870, 0.1140) on [0, 1]
values, converted back to uint8 by `convert_image_dtype`, i.e. floor(luma * 255.5) -- a
truncation, not round-half-up. The 32x32 image is flattened row-major; the pixel value 0..255
is the token (vocabulary 256). Every position is a real token: the mask is all True (a black
pixel is data, not padding). Splits as in LRA: train = TFDS train[:90%] (45,000), validation =
train[90%:] (5,000), test = test (10,000); we read the whole train split in TFDS order and cut
it at 90% ourselves, which gives the same examples as TFDS's percent slicing for 50,000.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from lra import tfds_source
from lra.batches import Split, TaskData

DATASET = "cifar10:3.0.2"
NUM_CLASSES = 10
VOCAB_SIZE = 256
SIDE = 32
LENGTH = SIDE * SIDE
TRAIN_FRACTION_PERCENT = 90


def grayscale_tokens(images: np.ndarray) -> np.ndarray:
  """uint8 RGB `[N, 32, 32, 3]` -> uint8 tokens `[N, 1024]` (LRA's conversion)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
    raise ValueError(f"expected uint8 RGB images [N, H, W, 3], got {images.dtype} "
                     f"{images.shape}")
  gray = tf.image.rgb_to_grayscale(images).numpy()
  return gray.reshape(len(images), -1)


def train_cut(num_examples: int) -> int:
  """Index where train[:90%] ends (exact for CIFAR-10's 50,000)."""
  return num_examples * TRAIN_FRACTION_PERCENT // 100


def _read_split(split: str, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  tokens, labels = [], []
  for batch in tfds_source.iterate_split(DATASET, split, config, task="image"):
    if batch["image"].shape[1:] != (SIDE, SIDE, 3):
      raise ValueError(f"{DATASET} {split}: expected {SIDE}x{SIDE}x3 images, got "
                       f"{batch['image'].shape[1:]}")
    tokens.append(grayscale_tokens(batch["image"]))
    labels.append(np.asarray(batch["label"], np.int32))
  if not tokens:
    raise tfds_source.no_examples_error(DATASET, split, config)
  return {f"{split}_inputs": np.concatenate(tokens), f"{split}_targets": np.concatenate(labels)}


def load(config: ml_collections.ConfigDict) -> TaskData:
  if config.data.max_length != LENGTH:
    raise ValueError(f"config.data.max_length={config.data.max_length}; CIFAR-10 images "
                     f"are {LENGTH} pixels long")
  key = {"dataset": DATASET, "tfds_data_dir": tfds_source.tfds_data_dir(config),
         "tokens": "tf.image.rgb_to_grayscale, row-major"}
  folder = tfds_source.cache_dir_for(config, "image", key)
  arrays = tfds_source.cached_arrays(
      folder, key, lambda: {**_read_split("train", config), **_read_split("test", config)})
  cut = train_cut(len(arrays["train_targets"]))

  def split(name: str, inputs: np.ndarray, targets: np.ndarray, tfds_split: str) -> Split:
    lengths = np.full(len(targets), LENGTH, np.int32)  # no padding: every pixel is a token
    source = tfds_source.describe_split(DATASET, tfds_split, config)
    return Split(name, inputs, lengths, targets, source=f"{source}, cache {folder}")

  pct = TRAIN_FRACTION_PERCENT
  splits = {"train": split("train", arrays["train_inputs"][:cut], arrays["train_targets"][:cut],
                           f"train[:{pct}%]"),
            "validation": split("validation", arrays["train_inputs"][cut:],
                                arrays["train_targets"][cut:], f"train[{pct}%:]"),
            "test": split("test", arrays["test_inputs"], arrays["test_targets"], "test")}
  return TaskData("image", splits, vocab_size=VOCAB_SIZE, num_classes=NUM_CLASSES,
                  max_length=LENGTH,
                  notes=f"{DATASET} grayscale; train[:90%]/train[90%:]/test; cache {folder}")
