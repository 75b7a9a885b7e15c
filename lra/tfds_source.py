"""TFDS-backed tasks (Text, Image): reading a prepared TFDS split as numpy, and the
tokenised-array cache they share.

TFDS data is never downloaded implicitly (a training run should not start a multi-GB
download, and this machine may have no network): a missing data set is an error that gives
the exact `python -m lra.prepare` command, unless `config.data.tfds_download` is True.
`config.data_dir` is the TFDS data dir when set, else TFDS's default ($TFDS_DATA_DIR or
~/tensorflow_datasets); `lra.prepare --data_dir=DIR` prepares TFDS sets into the same DIR.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import ml_collections
import numpy as np

from lra.release import cache_root

_NOT_FOUND_HINT = "could not find data"  # tfds.load's AssertionError when not prepared


def tfds_data_dir(config: ml_collections.ConfigDict) -> str | None:
  return str(Path(config.data_dir).expanduser()) if config.data_dir else None


def where(config: ml_collections.ConfigDict) -> str:
  """The TFDS data dir in words, for messages."""
  return (tfds_data_dir(config)
          or "the TFDS default data dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)")


def describe_split(name: str, split: str, config: ml_collections.ConfigDict) -> str:
  """Where a split's rows come from, e.g. "TFDS cifar10:3.0.2 'train[:90%]' in DIR"."""
  return f"TFDS {name} {split!r} in {where(config)}"


def no_examples_error(name: str, split: str, config: ml_collections.ConfigDict) -> ValueError:
  """Raised before anything is cached, so fixing the data set is enough to recover."""
  return ValueError(f"{describe_split(name, split, config)} has no examples; is the prepared "
                    "data set complete? (python -m lra.prepare prepares it again)")


def prepare_command(task: str, config: ml_collections.ConfigDict) -> str:
  data_dir = tfds_data_dir(config)
  return f"python -m lra.prepare --tasks={task}" + (f" --data_dir={data_dir}" if data_dir else "")


def iterate_split(name: str, split: str, config: ml_collections.ConfigDict, task: str,
                  batch_size: int = 1024) -> Iterator[dict[str, np.ndarray]]:
  """Yields numpy batches of TFDS `name`/`split` in the data set's fixed order
  (`shuffle_files=False`, as LRA's pipelines read evaluation data)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  data_dir = tfds_data_dir(config)
  download = bool(config.data.get("tfds_download", False))
  try:
    dataset = tfds.load(name, split=split, data_dir=data_dir, download=download,
                        shuffle_files=False)
  except (AssertionError, tfds.core.DatasetNotFoundError) as error:
    if isinstance(error, AssertionError) and _NOT_FOUND_HINT not in str(error):
      raise
    raise FileNotFoundError(
        f"TFDS data set {name!r} is not prepared in {where(config)} (task {task!r}). Prepare "
        f"it once with:\n  {prepare_command(task, config)}\n(needs network access), or set "
        f"config.data.tfds_download=True, or point config.data_dir at a folder holding a "
        f"prepared '{name.split('/')[0].split(':')[0]}' TFDS directory.") from error
  yield from tfds.as_numpy(dataset.batch(batch_size))


def cache_dir_for(config: ml_collections.ConfigDict, task: str, key: dict) -> Path:
  """One folder per (task, everything that changes the arrays)."""
  digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
  return cache_root(config) / task / f"cache-{digest}"


def cached_arrays(folder: Path, key: dict,
                  build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Returns the arrays saved in `folder` (memory-mapped, read-only), building and saving
  them first when absent. Writes go to a temporary folder renamed into place, so an
  interrupted build never leaves a half-written cache."""
  if not (folder / "key.json").is_file():
    arrays = build()
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
      for name, array in arrays.items():
        np.save(tmp / f"{name}.npy", array)
      (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
    except BaseException:  # e.g. a full disk: leave no half-written folder behind
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    try:
      os.replace(tmp, folder)
    except OSError:  # another process finished first; keep theirs
      shutil.rmtree(tmp, ignore_errors=True)
  return load_arrays(folder)


def load_arrays(folder: Path) -> dict[str, np.ndarray]:
  return {path.stem: np.load(path, mmap_mode="r") for path in sorted(folder.glob("*.npy"))}
