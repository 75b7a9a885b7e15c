"""Orbax checkpoints of a run: the latest ones (for resuming) and the best by validation.

Faults of long runs:
- Saves are synchronous and atomic: Orbax writes `<step>.orbax-checkpoint-tmp-*` and renames it
  when complete, and only then deletes checkpoints beyond `keep`; a run killed mid-save leaves
  the previous checkpoints whole (its temporary folder is ignored and cleaned up).
- A damaged newest checkpoint (truncated or corrupt files): resuming falls back to the newest one
  that restores, says so, and moves the damaged ones to `workdir/checkpoints_damaged/` (kept for
  inspection, out of the manager's way). When no checkpoint restores, nothing is moved and the
  error names the newest folder (a different model gives this too).
- A full disk while saving: `CheckpointDiskFull`, naming the folder and the intact checkpoint
  to resume from; the partial temporary folder is removed.
- Multi-host: every process calls save and restore (Orbax writes collectively; process 0 writes
  the metadata); each process's input-pipeline state is saved under `input` (Grain's handler
  writes one file per process).
"""
from __future__ import annotations

import errno
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils


class CheckpointDiskFull(OSError):
  """Writing a checkpoint ran out of disk space; the previous checkpoints are intact."""


def _is_disk_full(error: BaseException) -> bool:
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return True
    if "No space left on device" in str(error):  # tensorstore's errors carry the text only
      return True
    error = error.__cause__ or error.__context__
  return False


class RunCheckpoints:
  """`workdir/checkpoints/<step>` (newest `keep` kept) and `workdir/best/<step>` (one kept)."""

  def __init__(self, workdir: Path, keep: int = 2):
    self.workdir = Path(workdir).absolute()
    self.restored_input = False  # whether the last restore() set the input pipeline's state
    options = lambda n: ocp.CheckpointManagerOptions(max_to_keep=n, create=True,
                                                     enable_async_checkpointing=False,
                                                     cleanup_tmp_directories=True)
    self.latest = ocp.CheckpointManager(self.workdir / "checkpoints",
                                        options=options(max(keep, 1)))
    self.best = ocp.CheckpointManager(self.workdir / "best", options=options(1))

  def _save(self, manager, step, state, meta, input_iter):
    from lra import pipeline  # pylint: disable=import-outside-toplevel
    items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
    if input_iter is not None:
      items["input"] = pipeline.checkpoint_save_args(input_iter)
    previous = manager.latest_step()
    try:
      manager.save(int(step), args=ocp.args.Composite(**items), force=True)
      manager.wait_until_finished()
    except Exception as error:  # pylint: disable=broad-except
      if not _is_disk_full(error):
        raise
      folder = Path(manager.directory)
      for partial in folder.glob(f"{int(step)}.orbax-checkpoint-tmp-*"):
        shutil.rmtree(partial, ignore_errors=True)
      raise CheckpointDiskFull(
          errno.ENOSPC, f"disk full while writing checkpoint step {int(step)} to {folder} "
          f"({error}); the previous checkpoint "
          f"{folder / str(previous) if previous is not None else '(none)'} is intact: free "
          "space and run the same command to resume from it") from error

  def save_latest(self, step: int, state, meta: dict, input_iter=None) -> None:
    self._save(self.latest, step, state, meta, input_iter)

  def save_best(self, step: int, state, meta: dict) -> None:
    self._save(self.best, step, state, meta, None)

  def _restore_step(self, manager, which, step, target_state, input_iter):
    from lra import pipeline  # pylint: disable=import-outside-toplevel
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
    items = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
    folder = Path(manager.directory) / str(step)
    if input_iter is not None and (folder / "input").exists():
      items["input"] = pipeline.checkpoint_restore_args(input_iter)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as error:  # Orbax's own errors name neither the folder nor a way out
      raise ValueError(f"checkpoint {folder} ({which}, step {step}) could not be restored: "
                       f"{type(error).__name__}: {error}. It is damaged or was written by a "
                       "different model; delete that folder to fall back to an earlier "
                       "checkpoint, or start a new --workdir") from error
    return restored.state, dict(restored.meta), step, "input" in items

  def restore(self, which: str, target_state, step: int | None = None, input_iter=None):
    """Returns (state, meta, step) from 'latest' or 'best', or None when there is none.

    With `input_iter`, the input pipeline's saved state is restored into it (when the
    checkpoint has one; `self.restored_input` says whether it did). 'latest' without a `step`
    falls back past damaged checkpoints (module docstring)."""
    manager = {"latest": self.latest, "best": self.best}[which]
    self.restored_input = False
    steps = sorted(manager.all_steps(), reverse=True) if step is None else [step]
    if not steps:
      return None
    if which != "latest" or step is not None:
      state, meta, found, self.restored_input = self._restore_step(
          manager, which, steps[0], target_state, input_iter)
      return state, meta, found
    errors = []
    for candidate in steps:
      try:
        state, meta, found, self.restored_input = self._restore_step(
            manager, which, candidate, target_state, input_iter)
      except ValueError as error:
        errors.append((candidate, error))
        continue
      if errors:
        self._set_aside_damaged(manager, errors, found)
      return state, meta, found
    raise errors[0][1]  # none restores: more likely a different model than damage

  def _set_aside_damaged(self, manager, errors, good_step):
    damaged = self.workdir / "checkpoints_damaged"
    for bad_step, error in errors:
      folder = Path(manager.directory) / str(bad_step)
      print(f"WARNING: {error.args[0].split('. It is damaged')[0]}. Resuming from the previous "
            f"checkpoint (step {good_step}) instead; the damaged one is moved to {damaged}.",
            file=sys.stderr, flush=True)
      if jax.process_index() == 0:
        damaged.mkdir(exist_ok=True)
        target = damaged / folder.name
        suffix = 0
        while target.exists():
          suffix += 1
          target = damaged / f"{folder.name}.{suffix}"
        shutil.move(str(folder), str(target))
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("lra_checkpoints_set_aside_damaged")
    manager.reload()

  def close(self):
    self.latest.close()
    self.best.close()
