"""A run directory's records: metrics.jsonl, TensorBoard events, results.json, config.json."""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

import ml_collections

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections", "numpy",
            "tensorflow-datasets")


def versions() -> dict:
  found = {"python": sys.version.split()[0], "platform": platform.platform()}
  for name in PACKAGES:
    try:
      found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      found[name] = None
  return found


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def write_json(path: Path, payload: dict) -> None:
  """Atomic write: a killed process never leaves a half-written file."""
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
  os.replace(tmp, path)


def check_or_write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
  """Saves the resolved config; a resumed run must use the same one."""
  path = workdir / "config.json"
  current = json.loads(config.to_json_best_effort())
  if path.exists():
    saved = json.loads(path.read_text())
    if saved != current:
      diff = sorted(differing_fields(saved, current))
      raise ValueError(f"{path}: this workdir was started with a different config "
                       f"(differs at {', '.join(diff)}); use a new --workdir")
  else:
    write_json(path, current)


def differing_fields(a, b, prefix=""):
  """Dotted paths of the fields where two config dicts differ. A field missing on one side and
  an empty dict on the other is no difference: a group of settings added to the defaults later
  (e.g. train.param_groups) changes nothing an earlier run did, so that run still resumes."""
  if isinstance(a, dict) and isinstance(b, dict):
    for key in set(a) | set(b):
      yield from differing_fields(a.get(key), b.get(key), f"{prefix}{key}.")
  elif a != b and not (_absent_or_empty(a) and _absent_or_empty(b)):
    yield prefix.rstrip(".")


def _absent_or_empty(value) -> bool:
  return value is None or (isinstance(value, dict) and not value)


def load_config(workdir: Path) -> ml_collections.ConfigDict:
  path = Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: is {workdir} a run directory of train.py?")
  config = ml_collections.ConfigDict(json.loads(path.read_text()))
  config.lock()
  return config


class MetricsLog:
  """Appends one JSON object per line to metrics.jsonl and mirrors scalars to TensorBoard.

  On resume, records after the restored step are dropped, so the file ends up as an
  uninterrupted run's would."""

  def __init__(self, workdir: Path, resume_step: int):
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():
      lines, kept = self.path.read_text().splitlines(), []
      for number, line in enumerate(lines, 1):
        if not line.strip():
          continue
        try:
          step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
          if number == len(lines):  # cut by a kill: written after the restored checkpoint
            print(f"{self.path}:{number}: unreadable last record dropped", file=sys.stderr)
            continue
          raise ValueError(f"{self.path}:{number}: not a metrics record ({error!r}); the file "
                           "is damaged: repair or delete that line to resume") from error
        if step <= resume_step:
          kept.append(line)
      tmp = self.path.with_suffix(".tmp")
      tmp.write_text("".join(line + "\n" for line in kept))
      os.replace(tmp, self.path)
    from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
    self.writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)

  def write(self, step: int, split: str, values: dict) -> None:
    record = {"step": int(step), "split": split, **{k: float(v) for k, v in values.items()}}
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in values.items():
      self.writer.add_scalar(f"{split}/{key}", float(value), int(step))

  def close(self):
    self.writer.close()
