"""Tokenised splits held as padded arrays, and deterministic, resumable batch iterators.

Every task module turns its files into `Split`s; this module turns a `Split` into the batch
dicts of the contract: `inputs` int32 `[B, L]`, `mask` bool `[B, L]`, `targets` int32 `[B]`
(pair tasks add `inputs2`/`mask2`). Evaluation batches also carry `valid` bool `[B]`: the
last batch of a split is padded to the full batch size and `valid` marks its real rows.

Token-level tasks (a decoder LM: `TaskData.mode` "lm"; an encoder-decoder: "seq2seq") have
`targets` int32 `[B, T]` and `weights` bool `[B, T]`: which target tokens the loss and the
metrics count. A decoder's `targets[:, t]` is the token after `inputs[:, t]`; an
encoder-decoder reads the source from `inputs`/`mask` and its decoder inputs (the targets
shifted right behind a start token) from `inputs2`/`mask2`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import numpy as np


@dataclasses.dataclass
class Split:
  """One split. `inputs` `[N, L]` (any int dtype, may be a memmap), `lengths` `[N]`,
  `targets` `[N]`; pair tasks also `inputs2`/`lengths2`. Token-level tasks: `targets`
  `[N, T]` and `weights` `[N, T]` (bool: the target tokens that count). `source` says where
  the rows came from (a file, a TFDS split), for error messages."""
  name: str
  inputs: np.ndarray
  lengths: np.ndarray
  targets: np.ndarray
  inputs2: np.ndarray | None = None
  lengths2: np.ndarray | None = None
  source: str = ""
  weights: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.targets)
    for field in ("inputs", "lengths", "inputs2", "lengths2", "weights"):
      array = getattr(self, field)
      if array is not None and len(array) != n:
        raise ValueError(f"split {self.name!r}: {field} has {len(array)} rows, targets {n}")
    if (np.ndim(self.targets) == 2) != (self.weights is not None):
      raise ValueError(f"split {self.name!r}: token targets [N, T] come with weights [N, T] "
                       f"and class targets [N] without; got targets of shape "
                       f"{np.shape(self.targets)} and weights "
                       f"{None if self.weights is None else np.shape(self.weights)}")
    if self.weights is not None and np.shape(self.weights) != np.shape(self.targets):
      raise ValueError(f"split {self.name!r}: weights {np.shape(self.weights)} and targets "
                       f"{np.shape(self.targets)} differ in shape")

  def __len__(self):
    return len(self.targets)

  def label_counts(self, num_classes: int) -> np.ndarray:
    """How often each class (token-level tasks: each target token that counts) occurs."""
    targets = np.asarray(self.targets)
    if self.weights is not None:
      targets = targets[np.asarray(self.weights, bool)]
    return np.bincount(targets.reshape(-1), minlength=num_classes)

  def batch(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    batch = {"inputs": _tokens(self.inputs, rows), "mask": _mask(self.lengths[rows],
                                                                  self.inputs.shape[1]),
             "targets": np.asarray(self.targets[rows], np.int32)}
    if self.inputs2 is not None:
      batch["inputs2"] = _tokens(self.inputs2, rows)
      batch["mask2"] = _mask(self.lengths2[rows], self.inputs2.shape[1])
    if self.weights is not None:
      batch["weights"] = np.asarray(self.weights[rows], bool)
    return batch


def _tokens(array, rows):
  return np.asarray(array[rows], np.int32)


def _mask(lengths, max_len):
  return np.arange(max_len)[None, :] < np.asarray(lengths)[:, None]


def pad_rows(tokens: list[np.ndarray] | list[list[int]], max_len: int,
             dtype=np.int32) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads token sequences with 0 to `[N, max_len]`; returns (array, lengths)."""
  out = np.zeros((len(tokens), max_len), dtype)
  lengths = np.zeros(len(tokens), np.int32)
  for i, seq in enumerate(tokens):
    n = min(len(seq), max_len)
    out[i, :n] = seq[:n]
    lengths[i] = n
  return out, lengths


def check_train_split(split: Split, batch_size: int) -> None:
  """A training split must hold at least one full batch (the error names both sizes)."""
  n = len(split)
  if n < batch_size:
    raise ValueError(f"split {split.name!r} has {n} examples, fewer than batch size "
                     f"{batch_size}")


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  """The order in which epoch `epoch` visits the `n` rows: a fresh permutation per epoch."""
  order = np.random.default_rng([seed, epoch]).permutation(n)
  return order


@functools.lru_cache(maxsize=4)
def _cached_epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  """`epoch_order`, computed once per epoch rather than once per step (thread-safe; each
  worker process of the Grain pipeline keeps its own)."""
  order = epoch_order(n, seed, epoch)
  order.flags.writeable = False
  return order


def train_rows(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """The row ids of training batch `step`: a pure function of (n, batch_size, seed, step),
  shared by `train_batches` and the Grain pipeline (lra/pipeline.py)."""
  steps_per_epoch = n // batch_size  # the remainder of each epoch is reshuffled, not lost
  epoch, index = divmod(step, steps_per_epoch)
  return _cached_epoch_order(n, seed, epoch)[index * batch_size:(index + 1) * batch_size]


def train_batches(split: Split, batch_size: int, seed: int,
                  start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """Endless shuffled batches; batch `s` depends only on (seed, s), so a resumed run
  starting at `start_step` sees exactly the batches an uninterrupted run would."""
  check_train_split(split, batch_size)
  step = start_step
  while True:
    yield split.batch(train_rows(len(split), batch_size, seed, step))
    step += 1


def eval_batch_count(n: int, batch_size: int, max_batches: int | None = None) -> int:
  """How many evaluation batches cover `n` rows (at most `max_batches` when it is > 0)."""
  count = -(-n // batch_size)
  if max_batches is not None and max_batches > 0:
    count = min(count, max_batches)
  return count


def eval_rows(n: int, batch_size: int, index: int) -> tuple[np.ndarray, np.ndarray]:
  """(rows, valid) of evaluation batch `index`: rows in order, the last batch padded with
  row 0 and `valid` False on exactly the padded rows."""
  rows = np.arange(index * batch_size, min((index + 1) * batch_size, n))
  valid = np.ones(batch_size, bool)
  if len(rows) < batch_size:
    valid[len(rows):] = False
    rows = np.concatenate([rows, np.zeros(batch_size - len(rows), rows.dtype)])
  return rows, valid


def eval_batches(split: Split, batch_size: int,
                 max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """The split in order, once; the last batch padded to `batch_size` with `valid` False."""
  for b in range(eval_batch_count(len(split), batch_size, max_batches)):
    rows, valid = eval_rows(len(split), batch_size, b)
    batch = split.batch(rows)
    batch["valid"] = valid
    yield batch


MODES = ("classify", "lm", "seq2seq")


@dataclasses.dataclass
class TaskData:
  """What a task module returns: splits plus the metadata the model and loop need.

  `skipped` records every example a reader dropped on purpose (never silently): what was
  skipped -> count per split, e.g. {"empty_png_files": {"train": 3, ...}}; train.py prints it
  with the task description and writes it to results.json. A split with no examples is an
  error here, at load time, for every task."""
  name: str
  splits: dict[str, Split]  # "train", "validation", "test"
  vocab_size: int
  num_classes: int
  max_length: int
  pair: bool = False
  notes: str = ""
  # "classify" (LRA: targets [N]), "lm" (a causal decoder over `inputs`: targets [N, L]) or
  # "seq2seq" (an encoder over `inputs`, a decoder over `inputs2`: targets [N, T]).
  mode: str = "classify"
  # "byte": each token is one byte, so results also give bits per byte (byte_lm).
  token_unit: str = ""
  skipped: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"task {self.name}: mode={self.mode!r}; expected one of {MODES}")
    for name, split in self.splits.items():
      if len(split) == 0:
        raise ValueError(f"task {self.name}: split {name!r} has no examples (from "
                         f"{split.source or 'an unnamed source'}); every split needs at "
                         "least one example")

  @property
  def target_length(self) -> int | None:
    """The decoder's length of an encoder-decoder task (its `inputs2`), else None."""
    if self.mode != "seq2seq":
      return None
    return int(self.splits["train"].inputs2.shape[1])

  def sizes(self) -> dict[str, int]:
    return {name: len(split) for name, split in self.splits.items()}

  def describe(self) -> str:
    sizes = ", ".join(f"{k}={v:,}" for k, v in self.sizes().items())
    skipped = "".join(
        f"; skipped {sum(counts.values()):,} {what.replace('_', ' ')} ("
        + ", ".join(f"{k}={v:,}" for k, v in counts.items()) + ")"
        for what, counts in self.skipped.items())
    kind = (f"{self.num_classes} classes" if self.mode == "classify" else
            f"{'decoder LM' if self.mode == 'lm' else 'encoder-decoder'}, token targets")
    return (f"task {self.name}: {sizes}; vocab {self.vocab_size}, {kind}, "
            f"length {self.max_length}{', pair' if self.pair else ''}{skipped}")
