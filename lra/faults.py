"""Faults of long runs that train.py handles: preemption signals and non-finite losses.

(Damaged checkpoints and a full disk are lra/checkpoints.py's.)
"""
from __future__ import annotations

import math
import signal

import jax

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run stopped on a signal after saving a checkpoint; run the same command to resume."""

  def __init__(self, step: int, signum: int, checkpoint: str):
    self.step, self.signum = step, signum
    name = signal.Signals(signum).name
    super().__init__(f"{name} received: stopped after step {step} and saved checkpoint "
                     f"{checkpoint}; run the same command to resume from it")

  @property
  def exit_status(self) -> int:
    return 128 + self.signum  # what a shell reports for a process ended by that signal


class NonFiniteLoss(FloatingPointError):
  """A NaN or Inf loss or gradient under `config.train.nan_policy="stop"`."""


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a request to stop after the current step.

  One process: a Python handler records the signal and the loop checks `requested(step)` after
  every step. Several processes (`jax.distributed`): JAX's preemption sync manager receives the
  SIGTERM on any host and agrees on one step at which all hosts stop
  (`multihost_utils.reached_preemption_sync_point`), so that their collective checkpoint is of
  one step. A second signal while stopping is left to Python's default (a second Ctrl-C
  interrupts the save)."""

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}
    self._multi = jax.process_count() > 1

  def __enter__(self):
    if not self._multi:
      for signum in HANDLED_SIGNALS:
        try:
          self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread (e.g. called from a worker): no handler
          pass
    return self

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.signum = signum
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def requested(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      if multihost_utils.reached_preemption_sync_point(step):
        self.signum = signal.SIGTERM
        return True
      return False
    return self.signum is not None

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False


def first_nonfinite(window: list[dict], first_step: int) -> tuple[int, float] | None:
  """(step, loss) of the first step of a window of step metrics whose loss or gradient was not
  finite (`nonfinite` = 1), or None. Steps are numbered from 1 (the step that was done)."""
  for offset, metrics in enumerate(window):
    if float(metrics["nonfinite"]) > 0:
      return first_step + offset, float(metrics["loss"])
  return None


def nonfinite_message(step: int, loss: float, last_checkpoint: str) -> str:
  what = "loss" if not math.isfinite(loss) else "gradient"
  return (f"step {step}: the {what} is not finite (loss={loss}); training stopped and that "
          f"step's update was not applied. The last good checkpoint is {last_checkpoint} "
          "(nothing was saved after the bad step). Lower the learning rate or clip gradients "
          "(config.train.grad_clip_norm), or set config.train.nan_policy='skip' to skip such "
          "steps and count them")
