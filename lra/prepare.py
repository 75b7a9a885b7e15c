"""One command that gets the LRA data ready:

  python -m lra.prepare --tasks=listops,text,retrieval,image,pathfinder,pathx \
      --data_dir=DIR [--release=PATH/TO/lra_release.gz | PATH/TO/lra_release/]

- `--release`: a downloaded LRA release (the tarball, or an unpacked folder). A tarball is
  unpacked into DIR; a folder outside DIR is linked as DIR/lra_release. Any of the known layouts
  (`DIR/...`, `DIR/lra_release/...`, `DIR/lra_release/lra_release/...`) is accepted; the
  command reports which release files it found and which are missing.
- text, image: TFDS `download_and_prepare` of imdb_reviews / cifar10 into DIR (or TFDS's
  default data dir without --data_dir; needs network access), then the token cache is built.
- retrieval: needs the release (AAN pairs); the files are tokenised into the cache.
- listops, pathfinder, pathx: read from the release when it has the files the config asks for
  (Pathfinder: `config.data.resolution`/`difficulty`), else generated in the release format
  into the cache, where training finds them with an empty config.data_dir.
Afterwards train with `--config.data_dir=DIR` (tasks from TFDS or the release) or with an
empty data_dir (generated tasks). Every problem is reported with the command or download that
fixes it; the exit status is non-zero when a task is not ready.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import tarfile
import traceback
from pathlib import Path

from lra.release import release_roots

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
CONFIG_MODULES = {"listops": "base_listops", "text": "base_text", "retrieval": "base_retrieval",
                  "image": "base_image", "pathfinder": "base_pathfinder", "pathx": "base_pathx"}
RELEASE_URL = ("https://storage.googleapis.com/long-range-arena/lra_release.gz "
               "(linked from the google-research/long-range-arena README)")
PATHFINDER_DIFFICULTIES = ("curv_baseline", "curv_contour_length_9", "curv_contour_length_14")
# What each task needs from the release, relative to its root (`lra_release/`).
RELEASE_FILES = {
    "listops": [f"listops-1000/basic_{s}.tsv" for s in ("train", "val", "test")],
    "retrieval": [f"tsv_data/new_aan_pairs.{s}.tsv" for s in ("train", "eval", "test")],
    "pathfinder": [f"pathfinder32/{d}/metadata" for d in PATHFINDER_DIFFICULTIES],
    "pathx": [f"pathfinder128/{d}/metadata" for d in PATHFINDER_DIFFICULTIES],
}
TFDS_NAMES = {"text": "imdb_reviews/plain_text:1.0.0", "image": "cifar10:3.0.2"}


@dataclasses.dataclass
class Outcome:
  task: str
  ok: bool
  message: str


# ----------------------------------------------------------------------------- the release
def find_release_root(data_dir: Path) -> tuple[Path | None, dict[str, list[str]]]:
  """The known layout holding the most release files, and per task the files it has."""
  best, best_found = None, {}
  for root in release_roots(data_dir):
    found = {task: [f for f in files if (root / f).exists()]
             for task, files in RELEASE_FILES.items()}
    if sum(map(len, found.values())) > sum(map(len, best_found.values())):
      best, best_found = root, found
  return best, best_found


def install_release(release: Path, data_dir: Path) -> str:
  """Unpacks a release tarball into `data_dir`, or links a release folder as
  `data_dir/lra_release`. Returns what it did."""
  release = release.expanduser().resolve()
  if not release.exists():
    raise FileNotFoundError(f"--release={release} does not exist; download {RELEASE_URL}")
  data_dir.mkdir(parents=True, exist_ok=True)
  if release.is_dir():
    if release == data_dir.resolve() or data_dir.resolve() in release.parents:
      return f"release folder {release} is inside --data_dir"
    link = data_dir / "lra_release"
    if link.is_symlink() and link.resolve() == release:
      return f"{link} already links to {release}"
    if link.exists() or link.is_symlink():
      raise FileExistsError(f"{link} exists and is not a link to {release}; remove it or "
                            "pass that folder as --data_dir")
    link.symlink_to(release, target_is_directory=True)
    return f"linked {link} -> {release}"
  if not tarfile.is_tarfile(release):
    raise ValueError(f"--release={release} is neither a folder nor a tar archive (the "
                     f"release is {RELEASE_URL}, a gzipped tar)")
  marker = data_dir / f".unpacked-{release.name}-{release.stat().st_size}"
  if marker.exists():
    return f"{release} was unpacked into {data_dir} before ({marker.name}); not unpacking again"
  with tarfile.open(release) as archive:
    archive.extractall(data_dir, filter="data")  # refuses absolute paths and '..' members
  marker.touch()
  return f"unpacked {release} into {data_dir}"


def release_report(data_dir: Path, tasks: list[str]) -> tuple[Path | None, list[str]]:
  root, found = find_release_root(data_dir)
  lines = [f"release root: {root}" if root else f"no LRA release files under {data_dir}"]
  for task in tasks:
    if task not in RELEASE_FILES:
      continue
    have = set(found.get(task, []))
    missing = [f for f in RELEASE_FILES[task] if f not in have]
    lines.append(f"  {task}: found {len(have)}/{len(RELEASE_FILES[task])}"
                 + (f"; missing {', '.join(missing)}" if missing else ""))
  return root, lines


def release_has(root: Path | None, task: str) -> bool:
  return root is not None and all((root / f).exists() for f in RELEASE_FILES[task])


# ----------------------------------------------------------------------------- tasks
def task_config(task: str, preset: str, data_dir: str, cache_dir: str):
  module = importlib.import_module(f"configs.{CONFIG_MODULES[task]}")
  config = module.get_config(preset or None)
  with config.unlocked():
    config.data_dir, config.cache_dir = data_dir, cache_dir
  return config


def prepare_tfds(task: str, data_dir: Path | None, preset: str, cache_dir: str) -> Outcome:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  name = TFDS_NAMES[task]
  where = str(data_dir) if data_dir else None
  try:
    tfds.builder(name, data_dir=where).download_and_prepare()
  except Exception as error:  # pylint: disable=broad-except
    return Outcome(task, False,
                   f"TFDS could not download/prepare {name} into {where or 'the TFDS default dir'}"
                   f" ({type(error).__name__}: {str(error)[:300]}). This needs network access; "
                   f"on a machine with network run this command there and copy the resulting "
                   f"'{name.split('/')[0]}' folder into {where or '~/tensorflow_datasets'}.")
  module = importlib.import_module(f"lra.{task}")
  data = module.load(task_config(task, preset, where or "", cache_dir))
  return Outcome(task, True, f"TFDS {name} ready; {data.describe()}")


def prepare_retrieval(root: Path | None, preset: str, cache_dir: str) -> Outcome:
  from lra import retrieval  # pylint: disable=import-outside-toplevel
  if not release_has(root, "retrieval"):
    config = task_config("retrieval", preset, "", cache_dir)
    if config.data.synthetic.use_when_no_release:  # the :quick / :tiny presets
      data = retrieval.load(config)
      return Outcome("retrieval", True, "no release: this preset trains on synthetic pairs "
                                        f"(config.data.synthetic); {data.describe()}")
    return Outcome("retrieval", False,
                   f"the AAN pairs ({', '.join(RELEASE_FILES['retrieval'])}) come only with the "
                   f"LRA release: download {RELEASE_URL} and rerun with --release=PATH/TO/"
                   "lra_release.gz (the :quick and :tiny presets run on synthetic pairs without "
                   "it)")
  data = retrieval.load(task_config("retrieval", preset, str(root), cache_dir))
  return Outcome("retrieval", True, f"read from the release (train with --config.data_dir="
                                    f"{root}); AAN pairs tokenised; {data.describe()}")


def prepare_generated(task: str, root: Path | None, preset: str, cache_dir: str) -> Outcome:
  """ListOps / Pathfinder / Path-X: read from the release when it has the files the config
  asks for, else generated in the release format into the cache; then loaded once, which
  also builds the decoded/tokenised cache training will use."""
  module = importlib.import_module(f"lra.{'listops' if task == 'listops' else 'pathfinder'}")
  config = task_config(task, preset, "", cache_dir)
  if root is not None and _release_has_config_data(module, task, root, config):
    with config.unlocked():
      config.data_dir = str(root)
    data = module.load(config)
    return Outcome(task, True, f"read from the release (train with --config.data_dir={root}); "
                               f"{data.describe()}")
  data = module.load(config)  # generates on first use
  hint = " and --config.cache_dir=" + cache_dir if cache_dir else ""
  return Outcome(task, True, f"generated, no release files for it (train with an empty "
                             f"config.data_dir{hint}); {data.describe()}; {data.notes}")


def _release_has_config_data(module, task: str, root: Path, config) -> bool:
  if task == "listops":
    return release_has(root, "listops")
  try:  # the resolution and difficulty this config reads
    module.find_difficulty_dir(root, int(config.data.resolution), config.data.difficulty)
  except FileNotFoundError:
    return False
  return True


def run(tasks: list[str], data_dir: str = "", release: str = "", cache_dir: str = "",
        preset: str = "", echo=print) -> list[Outcome]:
  """Prepares `tasks`; returns one Outcome per task (also echoed as it goes)."""
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown:
    raise ValueError(f"--tasks has unknown {unknown}; known: {', '.join(TASKS)}")
  if release and not data_dir:
    raise ValueError("--release needs --data_dir (where the release is unpacked or linked)")
  data_path = Path(data_dir).expanduser() if data_dir else None
  if release:
    echo(install_release(Path(release), data_path))
  root = None
  if data_path is not None and any(t in RELEASE_FILES for t in tasks):
    root, lines = release_report(data_path, tasks)
    for line in lines:
      echo(line)
  outcomes = []
  for task in tasks:
    echo(f"[{task}] preparing ...")
    try:
      if task in TFDS_NAMES:
        outcome = prepare_tfds(task, data_path, preset, cache_dir)
      elif task == "retrieval":
        outcome = prepare_retrieval(root, preset, cache_dir)
      else:
        outcome = prepare_generated(task, root, preset, cache_dir)
    except (FileNotFoundError, ValueError) as error:  # our own errors say what to do
      outcome = Outcome(task, False, f"{type(error).__name__}: {error}")
    except Exception as error:  # pylint: disable=broad-except
      outcome = Outcome(task, False, f"{type(error).__name__}: {error}\n"
                                     f"{traceback.format_exc(limit=3)}")
    echo(f"[{task}] {'ready' if outcome.ok else 'NOT READY'}: {outcome.message}")
    outcomes.append(outcome)
  return outcomes


def main():
  from absl import app, flags  # pylint: disable=import-outside-toplevel

  flags.DEFINE_list("tasks", list(TASKS), f"Tasks to prepare, from {', '.join(TASKS)}.")
  flags.DEFINE_string("data_dir", "", "Data root: TFDS data and the unpacked release go here "
                      "(pass the same folder as --config.data_dir when training). Empty: TFDS "
                      "default dir, no release.")
  flags.DEFINE_string("release", "", "lra_release tarball (.gz/.tar.gz) or unpacked folder.")
  flags.DEFINE_string("cache_dir", "", "Cache for tokenised and generated data (empty: "
                      "$LRA_CACHE_DIR or ~/.cache/lra_zoo); training must use the same.")
  flags.DEFINE_string("preset", "", "Config preset whose data to prepare (e.g. quick); empty "
                      "= the full LRA settings.")

  def run_main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    flag_values = flags.FLAGS
    try:
      outcomes = run(flag_values.tasks, flag_values.data_dir, flag_values.release,
                     flag_values.cache_dir, flag_values.preset)
    except (FileNotFoundError, ValueError) as error:  # a bad flag: one line, no traceback
      raise SystemExit(f"lra.prepare: {error}") from None
    failed = [o for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(failed)}/{len(outcomes)} tasks ready"
          + (f"; not ready: {', '.join(o.task for o in failed)}" if failed else ""))
    if failed:
      raise SystemExit(1)

  app.run(run_main)


if __name__ == "__main__":
  main()
