"""LRA Text: byte-level IMDb sentiment classification (Tay et al. 2021, sec. 2.2.2).

Data: TFDS `imdb_reviews/plain_text` (version pinned). Tokens: one per UTF-8 byte of the
review, with the ids of TFDS's `ByteTextEncoder` that LRA's pipeline used: id = byte + 1,
0 = padding, vocabulary 257; no EOS, no lower-casing. Each review is cut to
`config.data.max_length` bytes (LRA's repository uses 1000; the paper describes up to 4K).
Splits as in LRA: train = IMDb train (25,000); IMDb has no validation split, so validation and
test are both the IMDb test split (25,000) -- model selection on "validation" therefore looks
at the test set, as it did in LRA. Tokenised arrays are cached as .npy under
`<cache_root>/text/` and memory-mapped.
"""
from __future__ import annotations

from typing import Iterable

import ml_collections
import numpy as np

from lra import tfds_source
from lra.batches import Split, TaskData

DATASET = "imdb_reviews/plain_text:1.0.0"
NUM_CLASSES = 2
BYTE_OFFSET = 1      # ByteTextEncoder: ids 1..256 are bytes 0..255, 0 is padding
VOCAB_SIZE = 257


def byte_dtype(has_byte_255: bool):
  """uint8 holds ids 1..255, i.e. every byte but 0xFF (which never occurs in valid UTF-8)."""
  return np.uint16 if has_byte_255 else np.uint8


def encode_bytes(texts: Iterable[bytes], max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """Byte strings -> (ids `[N, max_length]` right-padded with 0, lengths `[N]`)."""
  texts = [t if isinstance(t, bytes) else str(t).encode("utf-8") for t in texts]
  if max_length < 1:
    raise ValueError(f"config.data.max_length={max_length}; expected a positive length")
  dtype = byte_dtype(any(b"\xff" in t[:max_length] for t in texts))
  ids = np.zeros((len(texts), max_length), dtype)
  lengths = np.zeros(len(texts), np.int32)
  for i, text in enumerate(texts):
    row = np.frombuffer(text, np.uint8, count=min(len(text), max_length))
    ids[i, :len(row)] = row.astype(dtype) + BYTE_OFFSET
    lengths[i] = len(row)
  return ids, lengths


def _read_split(split: str, config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  texts, labels = [], []
  for batch in tfds_source.iterate_split(DATASET, split, config, task="text"):
    texts.extend(batch["text"].tolist())
    labels.append(np.asarray(batch["label"], np.int32))
  if not texts:
    raise tfds_source.no_examples_error(DATASET, split, config)
  ids, lengths = encode_bytes(texts, config.data.max_length)
  targets = np.concatenate(labels)
  if targets.min() < 0 or targets.max() >= NUM_CLASSES:
    raise ValueError(f"{DATASET} {split}: labels outside 0..{NUM_CLASSES - 1}")
  return {f"{split}_inputs": ids, f"{split}_lengths": lengths, f"{split}_targets": targets}


def load(config: ml_collections.ConfigDict) -> TaskData:
  max_length = config.data.max_length
  key = {"dataset": DATASET, "tfds_data_dir": tfds_source.tfds_data_dir(config),
         "max_length": max_length, "encoding": "ByteTextEncoder (byte + 1)"}
  folder = tfds_source.cache_dir_for(config, "text", key)
  arrays = tfds_source.cached_arrays(
      folder, key, lambda: {**_read_split("train", config), **_read_split("test", config)})

  def split(name: str, source: str) -> Split:
    return Split(name, arrays[f"{source}_inputs"], arrays[f"{source}_lengths"],
                 arrays[f"{source}_targets"],
                 source=f"{tfds_source.describe_split(DATASET, source, config)}, cache {folder}")

  truncated = float(np.mean(arrays["train_lengths"] >= max_length))
  return TaskData("text", {"train": split("train", "train"),
                           "validation": split("validation", "test"),
                           "test": split("test", "test")},
                  vocab_size=VOCAB_SIZE, num_classes=NUM_CLASSES, max_length=max_length,
                  notes=(f"{DATASET}, bytes cut to {max_length} ({truncated:.0%} of train "
                         f"reviews reach the cut); validation = test = IMDb test; cache "
                         f"{folder}"))
