"""Orbax checkpoints of a run: the latest ones (for resuming) and the best by validation."""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
  """`workdir/checkpoints/<step>` (newest `keep` kept) and `workdir/best/<step>` (one kept).

  Saves are synchronous and atomic (Orbax writes to a temporary folder and renames), so a
  run killed at any moment leaves only complete checkpoints behind."""

  def __init__(self, workdir: Path, keep: int = 2):
    options = lambda n: ocp.CheckpointManagerOptions(max_to_keep=n, create=True,
                                                     enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints",
                                        options=options(max(keep, 1)))
    self.best = ocp.CheckpointManager(Path(workdir).absolute() / "best", options=options(1))

  @staticmethod
  def _save(manager, step, state, meta):
    manager.save(int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), force=True)
    manager.wait_until_finished()

  def save_latest(self, step: int, state, meta: dict) -> None:
    self._save(self.latest, step, state, meta)

  def save_best(self, step: int, state, meta: dict) -> None:
    self._save(self.best, step, state, meta)

  def restore(self, which: str, target_state, step: int | None = None):
    """Returns (state, meta, step) from 'latest' or 'best', or None when there is none."""
    manager = {"latest": self.latest, "best": self.best}[which]
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target_state)
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    except Exception as error:  # Orbax's own errors name neither the folder nor a way out
      folder = Path(manager.directory) / str(step)
      raise ValueError(f"checkpoint {folder} ({which}, step {step}) could not be restored: "
                       f"{type(error).__name__}: {error}. It is damaged or was written by a "
                       "different model; delete that folder to fall back to an earlier "
                       "checkpoint, or start a new --workdir") from error
    return restored.state, dict(restored.meta), step

  def close(self):
    self.latest.close()
    self.best.close()
