"""Copy (encoder-decoder): reproduce, or reverse, a random token sequence.

The classic sequence-to-sequence probe of long-range ability (the survey's encoder-decoder
mode): the encoder reads a source of n random symbols, the causal decoder writes it back
(or reversed, `config.data.reverse`) and then EOS. Copying needs every target position to
find its source position across the whole input (reversing: the mirrored one), so an
attention that cannot reach far, or cannot locate a position, fails it.

Tokens: 0 padding, 1 BOS, 2 EOS, symbols 3 .. 2 + `config.data.num_symbols`.
Per example (n uniform in [config.data.min_length, config.data.max_length]):
  inputs  = s_1 .. s_n                      mask  = first n positions   [N, max_length]
  targets = t_1 .. t_n EOS                  weights = first n + 1       [N, max_length + 1]
  inputs2 = BOS t_1 .. t_n  (targets shifted right behind BOS)          [N, max_length + 1]
with t = s (copy) or s reversed. The data are generated in memory, deterministically from
`config.data.seed` and the split (each split its own stream); random sources of length >= 8
over >= 8 symbols repeat across splits with negligible probability, shorter ones may.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from lra.batches import Split, TaskData

PAD, BOS, EOS = 0, 1, 2
FIRST_SYMBOL = 3
SPLITS = ("train", "validation", "test")
SIZE_FIELDS = {"train": "num_train", "validation": "num_val", "test": "num_test"}


def check_params(data: ml_collections.ConfigDict) -> None:
  """Errors name the config field."""
  if data.num_symbols < 1:
    raise ValueError(f"config.data.num_symbols={data.num_symbols}; expected >= 1 symbol")
  if not 1 <= data.min_length <= data.max_length:
    raise ValueError(f"config.data.min_length={data.min_length} and config.data.max_length="
                     f"{data.max_length}; expected 1 <= min_length <= max_length")
  for field in SIZE_FIELDS.values():
    if data[field] < 1:
      raise ValueError(f"config.data.{field}={data[field]}; every split needs an example")


def generate_split(data: ml_collections.ConfigDict, split: str) -> Split:
  """One split as a seq2seq `Split` (see the module docstring for the layout)."""
  check_params(data)
  n_rows, max_len = data[SIZE_FIELDS[split]], data.max_length
  rng = np.random.default_rng([data.seed, SPLITS.index(split)])
  lengths = rng.integers(data.min_length, data.max_length + 1, size=n_rows).astype(np.int32)
  symbols = rng.integers(FIRST_SYMBOL, FIRST_SYMBOL + data.num_symbols, (n_rows, max_len),
                         dtype=np.int32)
  positions = np.arange(max_len)[None, :]
  real = positions < lengths[:, None]
  source = np.where(real, symbols, PAD)
  if data.reverse:  # t_i = s_{n+1-i}
    mirrored = np.clip(lengths[:, None] - 1 - positions, 0, max_len - 1)
    body = np.where(real, np.take_along_axis(source, mirrored, axis=1), PAD)
  else:
    body = source
  targets = np.zeros((n_rows, max_len + 1), np.int32)
  targets[:, :max_len] = body
  targets[np.arange(n_rows), lengths] = EOS
  inputs2 = np.concatenate([np.full((n_rows, 1), BOS, np.int32), targets[:, :-1]], axis=1)
  weights = np.arange(max_len + 1)[None, :] < (lengths + 1)[:, None]  # t_1 .. t_n, EOS
  inputs2 = np.where(weights, inputs2, PAD)  # BOS t_1 .. t_n: EOS is never an input
  dtype = np.uint8 if FIRST_SYMBOL + data.num_symbols <= 256 else np.int32
  return Split(split, source.astype(dtype), lengths, targets.astype(dtype),
               inputs2=inputs2.astype(dtype), lengths2=lengths + 1, weights=weights,
               source=f"generated copy data (seed {data.seed}, split {split!r})")


def load(config: ml_collections.ConfigDict) -> TaskData:
  data = config.data
  check_params(data)
  splits = {split: generate_split(data, split) for split in SPLITS}
  vocab_size = FIRST_SYMBOL + data.num_symbols
  what = "reverse" if data.reverse else "copy"
  return TaskData("copy", splits, vocab_size=vocab_size, num_classes=vocab_size,
                  max_length=data.max_length, mode="seq2seq",
                  notes=(f"{what} sources of {data.min_length}-{data.max_length} tokens over "
                         f"{data.num_symbols} symbols; decoder length {data.max_length + 1} "
                         f"(targets + EOS); generated in memory, seed {data.seed}"))
