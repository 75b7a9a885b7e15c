"""Where data sits: a task's files in an unpacked LRA release (whichever known layout it
has), and the local cache for generated and tokenised data."""
from __future__ import annotations

import os
from pathlib import Path

import ml_collections


def release_roots(data_dir: str | os.PathLike) -> list[Path]:
  """The release's root as users unpack it: DIR, DIR/lra_release, DIR/lra_release/lra_release."""
  data_dir = Path(data_dir).expanduser()
  return [data_dir, data_dir / "lra_release", data_dir / "lra_release" / "lra_release"]


def find_task_dir(data_dir: str | os.PathLike, subfolder: str, required: list[str],
                  what: str, fix: str) -> Path:
  """The first of `data_dir` itself or `<root>/<subfolder>` that holds every `required` file;
  otherwise an error listing the places looked in and how to fix it."""
  data_dir = Path(data_dir).expanduser()
  candidates = [data_dir] + [root / subfolder for root in release_roots(data_dir)]
  for candidate in candidates:
    if all((candidate / f).is_file() for f in required):
      return candidate
  raise FileNotFoundError(f"no {what} files ({', '.join(required)}) under {data_dir} (looked in "
                          f"{', '.join(str(c) for c in candidates)}). {fix}")


def blank_line_error(path: str | os.PathLike, line_no: int) -> ValueError:
  """The one rule for blank (empty or whitespace-only) lines in every release-format reader
  (ListOps and Retrieval TSVs, Pathfinder metadata): an error naming file and line. LRA's own
  readers fail on them too (tf.data's CSV reader: "Field 0 is required but missing in record";
  its Pathfinder builder indexes the missing fields), so the release has none, and skipping one
  would hide a damaged file."""
  return ValueError(f"{path}:{line_no}: blank line; expected a data row (LRA's readers reject "
                    "blank lines too). Remove it, or check whether the file is damaged.")


def cache_root(config: ml_collections.ConfigDict) -> Path:
  """config.cache_dir, else $LRA_CACHE_DIR, else ~/.cache/lra_zoo."""
  root = config.cache_dir or os.environ.get("LRA_CACHE_DIR") or "~/.cache/lra_zoo"
  return Path(root).expanduser()
