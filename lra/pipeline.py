"""The Grain input pipeline: per-host shards of the training and evaluation batches, with
checkpointable iterator state, and a device look-ahead.

`train_input` yields, for step s = start_step, start_step + 1, ..., THIS host's rows of global
batch s, where global batch s is exactly `lra.batches.train_batches`' batch s (both take their
rows from `batches.train_rows`): host p of P gets rows [p*B/P, (p+1)*B/P) of it. The Grain
graph is

    MapDataset.range(start_step, num_steps)      # step ids
      .map(_TrainBatch)                          # step -> this host's batch dict (pure in step)
      .to_iter_dataset(ReadOptions(threads, prefetch))
      [.mp_prefetch(MultiprocessingOptions(workers))]

Because a batch is a pure function of (seed, step), the whole iterator state is the next step
(plus the numbers it depends on, checked on restore): `TrainIterator.get_state()` is
`{"next_step": s, ...}` and `set_state` rebuilds the Grain iterator at step s. So a state is
valid whatever `workers`/`threads`/`start_step` the restoring iterator was built with, and
restoring never replays batches. Grain's Orbax handler (`grain.checkpoint.CheckpointSave`/
`CheckpointRestore`) saves and restores it like any Grain `DatasetIterator`
(`checkpoint_save_args` / `checkpoint_restore_args`).

Length: `num_steps=None` means 2**40 steps (endless for any run: 35 years at 1,000 steps/s);
pass `num_steps=config.train.num_train_steps` for an iterator that stops after that step.
"""
from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import mmap
import os
from typing import Any, Callable, Iterable, Iterator

import grain
import numpy as np

from lra import batches as batch_lib
from lra.batches import Split

ENDLESS_STEPS = 2 ** 40


def host_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
  """Host `process_index`'s rows [p*B/P, (p+1)*B/P) of a global batch of B rows."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in [0, process_count="
                     f"{process_count})")
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                     f"{process_count} processes (hosts): {global_batch_size} % "
                     f"{process_count} = {global_batch_size % process_count}")
  per_host = global_batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


class _MemmapFile:
  """A read-only memory-mapped .npy array, pickled as its file name and layout, so worker
  processes map the file instead of receiving a copy of it (Path-X's train set is 2.6 GB)."""

  def __init__(self, array: np.memmap):
    self.args = {"filename": os.fspath(array.filename), "dtype": array.dtype, "mode": "r",
                 "offset": array.offset, "shape": array.shape,
                 "order": "F" if array.flags.f_contiguous and not array.flags.c_contiguous
                          else "C"}

  def __len__(self):  # Split checks its fields' lengths
    return self.args["shape"][0]

  def open(self) -> np.memmap:
    return np.memmap(**self.args)


def _by_file(value):
  """`value` with each whole-file memmap (itself, or the `array` of a row view such as
  pathfinder's RowView) replaced by a `_MemmapFile`."""
  if isinstance(value, np.memmap) and isinstance(value.base, mmap.mmap) and value.filename:
    return _MemmapFile(value)
  if isinstance(getattr(value, "array", None), np.memmap):
    view = copy.copy(value)
    view.array = _by_file(value.array)
    return view
  return value


def _from_file(value):
  if isinstance(value, _MemmapFile):
    return value.open()
  if isinstance(getattr(value, "array", None), _MemmapFile):
    view = copy.copy(value)
    view.array = value.array.open()
    return view
  return value


_SPLIT_ARRAYS = ("inputs", "lengths", "targets", "inputs2", "lengths2", "weights")


class _TrainBatch:
  """step -> this host's rows of global training batch `step`. Picklable for worker
  processes; memory-mapped arrays travel as their file (`_MemmapFile`), not their content."""

  def __init__(self, split: Split, global_batch_size: int, seed: int, rows: slice):
    self.split, self.batch_size, self.seed, self.rows = split, global_batch_size, seed, rows

  def __getstate__(self):
    state = dict(self.__dict__)
    state["split"] = dataclasses.replace(
        self.split, **{k: _by_file(getattr(self.split, k)) for k in _SPLIT_ARRAYS})
    return state

  def __setstate__(self, state):
    split = state["split"]
    state["split"] = dataclasses.replace(
        split, **{k: _from_file(getattr(split, k)) for k in _SPLIT_ARRAYS})
    self.__dict__.update(state)

  def __call__(self, step) -> dict[str, np.ndarray]:
    rows = batch_lib.train_rows(len(self.split), self.batch_size, self.seed, int(step))
    return self.split.batch(rows[self.rows])


class TrainIterator(grain.DatasetIterator):
  """A Grain `DatasetIterator` over this host's training batches; its state is the next step.

  The Grain iterator that does the work is built lazily (on the first `next`, or on
  `start_prefetch`), so restoring a state right after construction starts no worker twice."""

  def __init__(self, split: Split, global_batch_size: int, seed: int, *, process_index: int,
               process_count: int, workers: int, threads: int, prefetch: int,
               start_step: int, num_steps: int):
    super().__init__()
    self._map = _TrainBatch(split, global_batch_size, seed,
                            host_rows(global_batch_size, process_index, process_count))
    self._options = (workers, threads, prefetch)
    self._num_steps = num_steps
    self._identity = {"seed": int(seed), "global_batch_size": int(global_batch_size),
                      "split": split.name, "split_rows": len(split)}
    self._next_step = int(start_step)
    self._inner: grain.DatasetIterator | None = None

  def _dataset(self) -> grain.IterDataset:
    workers, threads, prefetch = self._options
    ds = grain.MapDataset.range(self._next_step, max(self._num_steps, self._next_step))
    ds = ds.map(self._map).to_iter_dataset(
        grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch))
    if workers > 0:
      _absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=workers, per_worker_buffer_size=max(prefetch, 1)))
    return ds

  def _iterator(self) -> grain.DatasetIterator:
    self._assert_not_closed()
    if self._inner is None:
      self._inner = iter(self._dataset())
    return self._inner

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iterator())
    self._next_step += 1
    return batch

  @property
  def next_step(self) -> int:
    """The step of the batch the next `next()` returns."""
    return self._next_step

  def state_at(self, next_step: int) -> dict[str, Any]:
    """The state of this iterator when its next batch is that of step `next_step`."""
    return {"next_step": int(next_step), **self._identity}

  def get_state(self) -> dict[str, Any]:
    return self.state_at(self._next_step)

  def set_state(self, state: dict[str, Any]) -> None:
    differs = {k: (state.get(k), v) for k, v in self._identity.items() if state.get(k) != v}
    if differs:
      raise ValueError("input pipeline state was saved for a different stream: " + ", ".join(
          f"{k} saved {saved!r}, now {now!r}" for k, (saved, now) in differs.items()))
    if self._inner is not None:  # rebuilt at the restored step on the next `next`
      self._inner.close()
      self._inner = None
    self._next_step = int(state["next_step"])

  def start_prefetch(self) -> None:
    self._iterator().start_prefetch()

  def close(self) -> None:
    if self._inner is not None:
      self._inner.close()
      self._inner = None
    super().close()


def _absl_flags_parsed() -> None:
  """Grain's worker processes read absl flags; outside an absl app (tests, scripts) nothing
  parsed them, so mark them parsed with their defaults."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def train_input(split: Split, global_batch_size: int, seed: int, *, process_index: int = 0,
                process_count: int = 1, workers: int = 0, prefetch: int = 2, threads: int = 2,
                start_step: int = 0, num_steps: int | None = None) -> TrainIterator:
  """This host's rows of training batches start_step, start_step + 1, ... (see the module
  docstring). `workers` > 0 builds the batches in that many processes (`mp_prefetch`),
  `threads` threads each, `prefetch` batches ahead; `num_steps` (default 2**40) is the step
  the iterator stops before."""
  batch_lib.check_train_split(split, global_batch_size)
  host_rows(global_batch_size, process_index, process_count)  # the divisibility error, now
  if workers < 0 or threads < 0 or prefetch < 0 or start_step < 0:
    raise ValueError(f"workers={workers}, threads={threads}, prefetch={prefetch} and "
                     f"start_step={start_step} must be >= 0")
  return TrainIterator(split, global_batch_size, seed, process_index=process_index,
                       process_count=process_count, workers=workers, threads=threads,
                       prefetch=prefetch, start_step=start_step,
                       num_steps=ENDLESS_STEPS if num_steps is None else num_steps)


def eval_input(split: Split, global_batch_size: int, *, process_index: int = 0,
               process_count: int = 1,
               max_batches: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """This host's rows of each of `eval_batches`' batches (same order, same padding, `valid`
  sliced with them), so the per-host sums over valid rows add up to the single-host ones.
  Every host yields the same number of batches, some possibly all padding."""
  rows = host_rows(global_batch_size, process_index, process_count)
  n = len(split)
  for b in range(batch_lib.eval_batch_count(n, global_batch_size, max_batches)):
    global_rows, valid = batch_lib.eval_rows(n, global_batch_size, b)
    batch = split.batch(global_rows[rows])
    batch["valid"] = valid[rows]
    yield batch


def device_prefetch(iterator: Iterable, put: Callable[[Any], Any],
                    size: int = 2) -> Iterator[Any]:
  """Yields `put(batch)` for each batch of `iterator`, in order, keeping `size` of them already
  put (device transfers in flight: `jax.device_put` is asynchronous): when batch i is yielded,
  `put` has been called for batches i .. i+size-1.

  It reads up to `size - 1` batches past the one being trained on, so a checkpoint must not
  save the training iterator's own position: wrap it in `ConsumedState` and save that."""
  if size < 1:
    raise ValueError(f"device_prefetch size must be >= 1, got {size}")
  iterator = iter(iterator)
  queue = collections.deque(put(batch) for batch in itertools.islice(iterator, size))
  while queue:
    yield queue.popleft()
    queue.extend(put(batch) for batch in itertools.islice(iterator, 1))


class ConsumedState:
  """Passes a `TrainIterator`'s batches through and keeps the input state of the batches the
  loop has stepped on: call `advance()` after each train step; `get_state()` (what
  `checkpoint_save_args(consumed)` saves) is then the state whose next batch is the first one
  not yet trained on, however far a look-ahead (`device_prefetch`) has read."""

  def __init__(self, iterator: TrainIterator):
    self.iterator = iterator
    self.next_step = iterator.next_step

  def __iter__(self):
    return self

  def __next__(self):
    return next(self.iterator)

  def advance(self, steps: int = 1) -> None:
    if self.next_step + steps > self.iterator.next_step:
      raise ValueError(f"advanced to step {self.next_step + steps}, but only batches up to "
                       f"step {self.iterator.next_step - 1} were read")
    self.next_step += steps

  def get_state(self) -> dict[str, Any]:
    return self.iterator.state_at(self.next_step)


class _SavedState(grain.DatasetIterator):
  """A fixed state for Grain's checkpoint handler (which saves `item.get_state()`)."""

  def __init__(self, state: dict[str, Any]):
    super().__init__()
    self._state = state

  def __next__(self):
    raise TypeError("a saved input state is not an iterator")

  def get_state(self) -> dict[str, Any]:
    return dict(self._state)

  def set_state(self, state: dict[str, Any]) -> None:
    raise TypeError("a saved input state cannot be restored into")


def checkpoint_save_args(source: TrainIterator | ConsumedState):
  """Orbax args saving the state of `source` (one JSON file per process, Grain's handler) as
  an item of an `ocp.args.Composite`, e.g. `input=checkpoint_save_args(consumed)`: a
  `TrainIterator`'s own position, or a `ConsumedState`'s (the batches trained on)."""
  from grain import checkpoint  # pylint: disable=import-outside-toplevel (imports Orbax)
  item = source if isinstance(source, grain.DatasetIterator) else _SavedState(source.get_state())
  return checkpoint.CheckpointSave(item)


def checkpoint_restore_args(iterator: TrainIterator):
  """Orbax args restoring a saved state into `iterator` (built with the same split, seed and
  batch size; any start_step/workers); the restored composite's entry is `iterator` itself."""
  from grain import checkpoint  # pylint: disable=import-outside-toplevel (imports Orbax)
  return checkpoint.CheckpointRestore(iterator)
