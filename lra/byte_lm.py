"""Byte-level language modelling (decoder-only): predict each next byte of a text.

Tokens: one per byte, id = byte + 1 (0 is padding; vocabulary 257), the ids of lra/text.py.
A split's text is one byte stream cut into windows of `config.data.max_length` + 1 bytes that
overlap by one byte (window i starts at byte i * max_length): inputs = window[:-1], targets =
window[1:], weights = every real target, so every byte of a split but its first is predicted
exactly once. The last window is shorter when the stream does not fill it (padded, with
`lengths`/`weights` marking the real bytes). Results in bits per byte: TaskData.token_unit.

Where the text comes from (one of):
- `config.data.text_file`: any file, read as bytes; train / validation / test are disjoint
  contiguous spans of it in that order, `config.data.split_fractions` of its bytes
  (default 90/5/5).
- `config.data.tfds_name`: a TFDS text data set (e.g. "tiny_shakespeare"); its splits
  `config.data.tfds_splits` (train, validation, test), feature `config.data.tfds_text_feature`,
  each split's examples joined with a newline in the data set's order. Read through
  lra/tfds_source.py (never downloaded unless `config.data.tfds_download`) and cached as .npy.
- neither (the default, used by the presets and tests): a text that ships with Python, so no
  download is needed -- CPython's `pydoc_data/topics.py`, the `topics` dict of the
  documentation's language-reference topics (~0.47 MB of English prose and code in
  Python 3.11), its entries in sorted-key order joined with newlines, then cut 90/5/5 as a
  text file. The text differs between Python versions; TaskData.notes records the version.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import ml_collections
import numpy as np

from lra import tfds_source
from lra.batches import Split, TaskData

BYTE_OFFSET = 1  # ids 1..256 are bytes 0..255, 0 is padding (as lra/text.py)
VOCAB_SIZE = 257
SPLITS = ("train", "validation", "test")


# ----------------------------------------------------------------------------- windows
def windows(stream: bytes | np.ndarray, max_length: int, name: str, source: str) -> Split:
  """A byte stream -> a `Split` of next-byte windows (see the module docstring). Inputs and
  targets are read-only strided views of padded id arrays (no copy per window)."""
  data = np.frombuffer(stream, np.uint8) if isinstance(stream, bytes) else np.asarray(stream)
  predicted = len(data) - 1  # every byte but the first is a target once
  if predicted < 1:
    raise ValueError(f"{source}: split {name!r} has {len(data)} byte(s); a language-model "
                     "split needs at least 2 (one input and its next byte)")
  count = -(-predicted // max_length)
  ids = np.zeros(count * max_length + 1, np.uint16)
  ids[:len(data)] = data.astype(np.uint16) + BYTE_OFFSET
  input_ids = ids.copy()
  input_ids[len(data) - 1] = 0  # the last byte is only a target: padding where it is no input

  def view(array):
    step = array.strides[0]
    return np.lib.stride_tricks.as_strided(array, (count, max_length),
                                           (max_length * step, step), writeable=False)

  lengths = np.minimum(max_length, predicted - max_length * np.arange(count)).astype(np.int32)
  weights = np.arange(max_length)[None, :] < lengths[:, None]
  return Split(name, view(input_ids), lengths, view(ids[1:]), weights=weights, source=source)


def split_spans(n_bytes: int, fractions, source: str) -> list[tuple[int, int]]:
  """Disjoint contiguous [start, stop) spans for train, validation, test, in that order."""
  fractions = tuple(float(f) for f in fractions)
  if len(fractions) != 3 or min(fractions) <= 0 or sum(fractions) > 1 + 1e-9:
    raise ValueError(f"config.data.split_fractions={fractions}; expected three positive "
                     "fractions (train, validation, test) summing to at most 1")
  bounds = np.round(np.cumsum((0.0,) + fractions) * n_bytes).astype(int)
  spans = [(int(bounds[i]), int(bounds[i + 1])) for i in range(3)]
  for name, (start, stop) in zip(SPLITS, spans):
    if stop - start < 2:
      raise ValueError(f"{source} has {n_bytes} bytes: too few for config.data."
                       f"split_fractions={fractions} (split {name!r} gets {stop - start}); "
                       "a language-model split needs at least 2 bytes")
  return spans


# ----------------------------------------------------------------------------- sources
def default_text() -> bytes:
  """CPython's pydoc_data.topics (ships with Python): see the module docstring."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  return "\n".join(topics.topics[key] for key in sorted(topics.topics)).encode("utf-8")


def read_text_file(path: str) -> bytes:
  file = Path(path).expanduser()
  if not file.is_file():
    raise FileNotFoundError(f"config.data.text_file={path!r}: no such file")
  text = file.read_bytes()
  if not text:
    raise ValueError(f"config.data.text_file={path!r} is empty; byte_lm needs a text")
  return text


def _read_tfds_split(config: ml_collections.ConfigDict, split: str) -> np.ndarray:
  data, feature = config.data, config.data.tfds_text_feature
  parts = []
  try:
    for batch in tfds_source.iterate_split(data.tfds_name, split, config, task="byte_lm"):
      if feature not in batch:
        raise ValueError(f"TFDS {data.tfds_name} has no feature {feature!r} "
                         f"(config.data.tfds_text_feature); it has {sorted(batch)}")
      parts.extend(t if isinstance(t, bytes) else str(t).encode("utf-8")
                   for t in batch[feature].tolist())
  except FileNotFoundError as error:  # lra.prepare knows the LRA tasks only
    raise FileNotFoundError(
        f"TFDS data set {data.tfds_name!r} (config.data.tfds_name) is not prepared in "
        f"{tfds_source.where(config)}. Prepare it once with tensorflow_datasets (`tfds build "
        f"{data.tfds_name}`, needs network access), set config.data.tfds_download=True, or "
        "point config.data_dir at the TFDS data dir holding it.") from error
  if not parts:
    raise tfds_source.no_examples_error(data.tfds_name, split, config)
  return np.frombuffer(b"\n".join(parts), np.uint8)


def _tfds_streams(config: ml_collections.ConfigDict) -> tuple[dict[str, np.ndarray], str]:
  data = config.data
  if len(data.tfds_splits) != 3:
    raise ValueError(f"config.data.tfds_splits={tuple(data.tfds_splits)}; expected the TFDS "
                     "split names for (train, validation, test)")
  key = {"dataset": data.tfds_name, "splits": list(data.tfds_splits),
         "feature": data.tfds_text_feature, "tfds_data_dir": tfds_source.tfds_data_dir(config),
         "joined_with": "newline"}
  folder = tfds_source.cache_dir_for(config, "byte_lm", key)
  arrays = tfds_source.cached_arrays(
      folder, key, lambda: {name: _read_tfds_split(config, tfds_split)
                            for name, tfds_split in zip(SPLITS, data.tfds_splits)})
  where = {name: f"{tfds_source.describe_split(data.tfds_name, tfds_split, config)}, cache "
                 f"{folder}" for name, tfds_split in zip(SPLITS, data.tfds_splits)}
  return arrays, where


def load(config: ml_collections.ConfigDict) -> TaskData:
  data = config.data
  if data.max_length < 1:
    raise ValueError(f"config.data.max_length={data.max_length}; expected a positive length")
  if data.text_file and data.tfds_name:
    raise ValueError(f"config.data.text_file={data.text_file!r} and config.data.tfds_name="
                     f"{data.tfds_name!r} are both set; byte_lm reads one text source")
  if data.tfds_name:
    arrays, where = _tfds_streams(config)
    splits = {name: windows(arrays[name], data.max_length, name, where[name])
              for name in SPLITS}
    what = f"TFDS {data.tfds_name} ({', '.join(data.tfds_splits)})"
  else:
    if data.text_file:
      text, what = read_text_file(data.text_file), f"text file {data.text_file}"
    else:
      text = default_text()
      what = f"pydoc_data.topics of Python {sys.version.split()[0]}"
    spans = split_spans(len(text), data.split_fractions, what)
    digest = hashlib.sha1(text).hexdigest()[:12]
    splits = {name: windows(text[start:stop], data.max_length, name,
                            f"{what}, bytes {start}:{stop}")
              for name, (start, stop) in zip(SPLITS, spans)}
    what += f" ({len(text):,} bytes, sha1 {digest}; spans {spans})"
  return TaskData("byte_lm", splits, vocab_size=VOCAB_SIZE, num_classes=VOCAB_SIZE,
                  max_length=data.max_length, mode="lm", token_unit="byte",
                  notes=f"{what}; windows of {data.max_length} next-byte predictions")
