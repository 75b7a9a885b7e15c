"""Associative recall (decoder-only LM): key-value pairs, then a query key; predict its value.

The synthetic recall task used to compare attention with state-space and long-convolution
models: H3 (Fu et al. 2023, sec. 3.1, Table 1: "a 2 c 4 b 3 d 1, query a -> 2") and Zoology
(Arora et al. 2023, sec. 3, whose multi-query version this is with one query). As in
Zoology's generator, keys and values come from separate vocabularies and are drawn without
replacement within a sequence (so every key, and every value, occurs at most once), and the
query is one of the sequence's keys, uniformly.

Tokens: 0 padding, keys 1 .. K (`config.data.num_keys`), values K + 1 .. K + V
(`config.data.num_values`). With N = `config.data.num_pairs`, each example is the
2N + 2 tokens
  inputs  = k_1 v_1 k_2 v_2 ... k_N v_N q a     (q = k_j for a uniform j, a = v_j)
  targets = inputs shifted left by one (targets[:, t] = the token after inputs[:, t]; the
            last target is padding)
  weights = True only at position 2N (the query), whose target is the answer a.
`config.data.max_length` must be 2N + 2 (base_associative_recall.py ties it to num_pairs).
The data are generated in memory, deterministically from `config.data.seed` and the split.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from lra.batches import Split, TaskData

PAD = 0
SPLITS = ("train", "validation", "test")
SIZE_FIELDS = {"train": "num_train", "validation": "num_val", "test": "num_test"}


def check_params(data: ml_collections.ConfigDict) -> None:
  """Errors name the config field."""
  n = data.num_pairs
  if n < 1:
    raise ValueError(f"config.data.num_pairs={n}; expected at least one key-value pair")
  for field in ("num_keys", "num_values"):
    if data[field] < n:  # keys and values are distinct within a sequence (Zoology)
      raise ValueError(f"config.data.{field}={data[field]} is smaller than config.data."
                       f"num_pairs={n}; a sequence draws {n} distinct ones")
  if data.max_length != 2 * n + 2:
    raise ValueError(f"config.data.max_length={data.max_length}; an associative recall "
                     f"example is 2 * config.data.num_pairs + 2 = {2 * n + 2} tokens")
  for field in SIZE_FIELDS.values():
    if data[field] < 1:
      raise ValueError(f"config.data.{field}={data[field]}; every split needs an example")


def _distinct(rng: np.random.Generator, rows: int, pool: int, size: int) -> np.ndarray:
  """`rows` draws of `size` distinct ids from 0..pool-1, uniform over ordered tuples of
  distinct ids (as a per-row choice without replacement)."""
  if pool <= 4 * size:  # a dense pool: the first `size` of a random permutation per row
    return np.argsort(rng.random((rows, pool)), axis=1)[:, :size]
  # A sparse pool: draw with replacement and redraw the rows that repeat an id (rejection
  # keeps the rows that are accepted uniform; each round keeps over half of them).
  out = rng.integers(0, pool, (rows, size))
  redraw = np.arange(rows)
  while len(redraw):
    ordered = np.sort(out[redraw], axis=1)
    redraw = redraw[(ordered[:, 1:] == ordered[:, :-1]).any(axis=1)]
    out[redraw] = rng.integers(0, pool, (len(redraw), size))
  return out


def generate_split(data: ml_collections.ConfigDict, split: str) -> Split:
  check_params(data)
  rows, n = data[SIZE_FIELDS[split]], data.num_pairs
  rng = np.random.default_rng([data.seed, SPLITS.index(split)])
  keys = 1 + _distinct(rng, rows, data.num_keys, n)
  values = 1 + data.num_keys + _distinct(rng, rows, data.num_values, n)
  which = rng.integers(0, n, size=rows)
  inputs = np.zeros((rows, 2 * n + 2), np.int32)
  inputs[:, 0:2 * n:2], inputs[:, 1:2 * n:2] = keys, values
  inputs[:, 2 * n] = keys[np.arange(rows), which]       # the query q
  inputs[:, 2 * n + 1] = values[np.arange(rows), which]  # its answer a
  targets = np.zeros_like(inputs)
  targets[:, :-1] = inputs[:, 1:]
  weights = np.zeros(inputs.shape, bool)
  weights[:, 2 * n] = True  # only the answer counts
  dtype = np.uint8 if 1 + data.num_keys + data.num_values <= 256 else np.int32
  return Split(split, inputs.astype(dtype), np.full(rows, 2 * n + 2, np.int32),
               targets.astype(dtype),
               weights=weights,
               source=f"generated associative recall data (seed {data.seed}, split {split!r})")


def load(config: ml_collections.ConfigDict) -> TaskData:
  data = config.data
  check_params(data)
  splits = {split: generate_split(data, split) for split in SPLITS}
  vocab_size = 1 + data.num_keys + data.num_values
  return TaskData("associative_recall", splits, vocab_size=vocab_size,
                  num_classes=vocab_size, max_length=data.max_length, mode="lm",
                  notes=(f"{data.num_pairs} pairs, {data.num_keys} keys, {data.num_values} "
                         f"values, one query; generated in memory, seed {data.seed}"))
