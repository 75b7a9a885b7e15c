"""The mutation check: small breaking changes the suite must catch.

Each `Mutation` replaces one exact line fragment of the code (it must occur exactly once in its
file) in a copy of the repository and runs the named tests there; the mutation is caught when
at least one of them fails. Run every entry, two at a time:

    python -m pytest -m mutations -n 2            # about 10 minutes on 2 cores
    python -m pytest -m mutations -k bigbird      # the entries whose name matches

It is not part of the default run (`pytest.ini` deselects the `mutations` marker);
`tests/test_mutation_list.py`, which is, checks that every entry still applies and names
existing tests, and that every registered mixer has an entry.
"""
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutation:
  name: str
  path: str   # relative to the repository root
  old: str    # occurs exactly once in the file
  new: str
  tests: tuple[str, ...]  # pytest node ids; at least one must fail
  why: str = ""           # the issue or audit finding it keeps fixed


MUTATIONS: list[Mutation] = [
    # Issue 16, section 1: mutations an audit found passing the suite.
    Mutation("train_step_never_updates", "train.py",
             "state = state.apply_gradients(grads=grads)",
             "state = state.replace(step=state.step + 1)",
             ("tests/test_train.py::test_the_train_step_updates_parameters_and_fits_one_batch",),
             "parameters never updated passed every end-to-end run"),
    Mutation("eval_counts_padded_rows", "train.py",
             'valid = batch["valid"].astype(jnp.float32)',
             'valid = jnp.ones_like(batch["valid"], jnp.float32)',
             ("tests/test_eval.py",),
             "padded rows of the last evaluation batch counted"),
    Mutation("train_batches_never_reshuffle", "lra/batches.py",
             "order = np.random.default_rng([seed, epoch]).permutation(n)",
             "order = np.random.default_rng([seed, 0]).permutation(n)",
             ("tests/test_batches.py::test_each_epoch_is_a_new_permutation_of_the_whole_split",),
             "train_batches reshuffling across epochs was untested"),
    Mutation("train_batches_too_small_split_accepted", "lra/batches.py",
             "  if n < batch_size:", "  if n < 0:",
             ("tests/test_batches.py::"
              "test_split_smaller_than_a_batch_is_an_error_naming_both_sizes",),
             "the too-small-split error was untested"),
    Mutation("eval_batches_mark_a_real_row_padded", "lra/batches.py",
             "valid[len(rows):] = False", "valid[len(rows) - 1:] = False",
             ("tests/test_batches.py::"
              "test_eval_batches_cover_the_split_in_order_once_with_the_last_padded",)),
    Mutation("checkpoints_keep_one_too_many", "lra/checkpoints.py",
             "options=options(max(keep, 1)))", "options=options(max(keep, 1) + 1))",
             ("tests/test_checkpoints.py::"
              "test_keeps_the_newest_latest_and_one_best_across_reopening",),
             "lra/checkpoints had no test module"),
    Mutation("release_accepts_an_incomplete_folder", "lra/release.py",
             "if all((candidate / f).is_file() for f in required):",
             "if any((candidate / f).is_file() for f in required):",
             ("tests/test_release.py::test_an_incomplete_folder_is_skipped_for_a_complete_one",),
             "lra/release had no test module"),
    Mutation("run_log_resume_drops_the_restored_step", "lra/run_log.py",
             "if step <= resume_step:", "if step < resume_step:",
             ("tests/test_run_log.py::test_resume_keeps_records_up_to_the_step_and_appends",),
             "lra/run_log had no test module"),
    Mutation("tasks_pathx_loads_images", "lra/tasks.py",
             '"pathx": "pathfinder"}', '"pathx": "image"}',
             ("tests/test_tasks.py::test_load_task_calls_its_modules_load_with_the_config",),
             "lra/tasks had no test module"),
    Mutation("tfds_source_shuffles_files", "lra/tfds_source.py",
             "shuffle_files=False)", "shuffle_files=True)",
             ("tests/test_tfds_source.py::test_what_tfds_load_is_asked_for",),
             "lra/tfds_source had no test module"),
    Mutation("linear_transformer_relu_features", "models/attention/linear_transformer.py",
             "return jax.nn.elu(x) + 1.0",
             "return jax.nn.relu(x) + 1.0",
             ("tests/test_attention_linear_transformer.py",),
             "the test imported the feature map it checked"),
]


def by_name() -> dict[str, Mutation]:
  names = [m.name for m in MUTATIONS]
  duplicates = {n for n in names if names.count(n) > 1}
  if duplicates:
    raise ValueError(f"tests/mutation_check.py: mutation names used twice: {sorted(duplicates)}")
  return {m.name: m for m in MUTATIONS}


def apply(mutation: Mutation, root: Path) -> None:
  """Applies the mutation to `root`'s copy of its file; the fragment must occur exactly once."""
  target = root / mutation.path
  text = target.read_text()
  count = text.count(mutation.old)
  if count != 1:
    raise ValueError(f"mutation {mutation.name!r}: {mutation.path} contains {mutation.old!r} "
                     f"{count} times, expected exactly once")
  target.write_text(text.replace(mutation.old, mutation.new))


def repository_files(root: Path = ROOT) -> list[str]:
  """Tracked and untracked-but-not-ignored files: the working tree as a fresh clone sees it."""
  listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                          check=True, capture_output=True, text=True).stdout
  return [name for name in listed.split("\0") if name and (root / name).is_file()]


def copy_repository(destination: Path, root: Path = ROOT) -> None:
  for name in repository_files(root):
    target = destination / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / name, target)


def run(mutation: Mutation, workspace: Path, timeout_s: float = 1200) -> tuple[str, str]:
  """('caught' | 'survived' | 'broken', pytest's output tail) for one mutation.

  'broken' means pytest could not run the named tests (exit status other than 0 or 1: a node
  id that no longer exists, an import error), so the entry itself needs fixing.
  """
  copy_repository(workspace)
  apply(mutation, workspace)
  env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
  command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             "-p", "no:xdist", *mutation.tests]
  done = subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True,
                        timeout=timeout_s)
  tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
  verdict = {0: "survived", 1: "caught"}.get(done.returncode, "broken")
  return verdict, tail
