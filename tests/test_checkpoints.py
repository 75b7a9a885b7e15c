"""lra.checkpoints.RunCheckpoints: an exact round trip of a train state (params of several
dtypes, optimiser state, step) and its meta; latest and best kept apart; the newest `keep`
latest ones and one best kept, across a reopened run too; no checkpoint -> None; a killed
save's temporary folder ignored; a damaged newest checkpoint falls back to the previous one; a
damaged only checkpoint is an error naming its folder; a full disk keeps the previous one."""
import errno
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

from lra import checkpoints as checkpoints_module
from lra.checkpoints import CheckpointDiskFull, RunCheckpoints


def make_state(seed=0):
  rng = np.random.default_rng(seed)
  params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=4), jnp.bfloat16)},
            "embed": jnp.asarray(rng.integers(-5, 5, size=(5,)), jnp.int32)}
  state = train_state.TrainState.create(apply_fn=None, params=params,
                                        tx=optax.adamw(1e-3, weight_decay=0.1))
  # one real optimiser update, so the Adam moments are non-zero and the step is not 0
  grads = jax.tree_util.tree_map(lambda p: jnp.ones_like(p) if p.dtype != jnp.int32 else p,
                                 params)
  grads = {"dense": grads["dense"], "embed": jnp.zeros(5, jnp.int32)}
  return state.apply_gradients(grads=grads)


def assert_same_state(a, b):
  leaves_a, tree_a = jax.tree_util.tree_flatten(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def step_dirs(folder):
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


@pytest.fixture
def state():
  return make_state()


def test_round_trip_is_exact(tmp_path, state):
  checkpoints = RunCheckpoints(tmp_path)
  meta = {"best_accuracy": 0.625, "best_step": 7}
  checkpoints.save_latest(7, state, meta)
  target = make_state(seed=1)  # different values, same structure: restore must overwrite them
  restored, restored_meta, step = checkpoints.restore("latest", target)
  checkpoints.close()
  assert step == 7 and restored_meta == meta
  assert int(restored.step) == int(state.step) == 1
  assert_same_state(restored.params, state.params)
  assert_same_state(restored.opt_state, state.opt_state)
  assert np.abs(np.asarray(restored.opt_state[0].mu["dense"]["kernel"])).min() > 0


def test_nothing_saved_restores_none(tmp_path, state):
  checkpoints = RunCheckpoints(tmp_path)
  assert checkpoints.restore("latest", state) is None
  assert checkpoints.restore("best", state) is None
  checkpoints.close()


def test_best_and_latest_are_kept_apart(tmp_path):
  checkpoints = RunCheckpoints(tmp_path, keep=3)
  states = {step: make_state(seed=step) for step in (2, 4, 6)}
  checkpoints.save_latest(2, states[2], {"best_step": 2})
  checkpoints.save_best(4, states[4], {"best_step": 4})
  checkpoints.save_latest(6, states[6], {"best_step": 4})
  best, best_meta, best_step = checkpoints.restore("best", states[2])
  latest, _, latest_step = checkpoints.restore("latest", states[2])
  older, _, _ = checkpoints.restore("latest", states[6], step=2)
  checkpoints.close()
  assert (best_step, latest_step, best_meta) == (4, 6, {"best_step": 4})
  assert_same_state(best.params, states[4].params)
  assert_same_state(latest.params, states[6].params)
  assert_same_state(older.params, states[2].params)
  assert step_dirs(tmp_path / "best") == [4]
  assert step_dirs(tmp_path / "checkpoints") == [2, 6]


def test_keeps_the_newest_latest_and_one_best_across_reopening(tmp_path, state):
  checkpoints = RunCheckpoints(tmp_path, keep=2)
  for step in (1, 2, 3):
    checkpoints.save_latest(step, state, {})
    checkpoints.save_best(step, state, {"best_step": step})
  checkpoints.close()
  assert step_dirs(tmp_path / "checkpoints") == [2, 3]
  assert step_dirs(tmp_path / "best") == [3]
  reopened = RunCheckpoints(tmp_path, keep=2)  # a resumed run: same limits on disk
  assert reopened.restore("latest", state)[2] == 3
  reopened.save_latest(4, state, {})
  reopened.save_best(4, state, {"best_step": 4})
  reopened.close()
  assert step_dirs(tmp_path / "checkpoints") == [3, 4]
  assert step_dirs(tmp_path / "best") == [4]


def test_keep_zero_still_keeps_one(tmp_path, state):
  checkpoints = RunCheckpoints(tmp_path, keep=0)
  for step in (5, 10):
    checkpoints.save_latest(step, state, {})
  checkpoints.close()
  assert step_dirs(tmp_path / "checkpoints") == [10]


def test_a_killed_saves_temporary_folder_is_ignored(tmp_path, state):
  checkpoints = RunCheckpoints(tmp_path)
  checkpoints.save_latest(3, state, {"best_step": 0})
  checkpoints.close()
  partial = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1234"  # where Orbax writes first
  partial.mkdir()
  (partial / "junk").write_bytes(b"half a checkpoint")
  reopened = RunCheckpoints(tmp_path)
  restored, _, step = reopened.restore("latest", state)
  reopened.close()
  assert step == 3
  assert_same_state(restored.params, state.params)


def damage_checkpoint(folder, damage):
  if damage == "no_state":
    shutil.rmtree(folder / "state")
  elif damage == "empty_step_folder":
    shutil.rmtree(folder)
    folder.mkdir()
  elif damage == "truncated_arrays":  # a write cut short: every array data file half as long
    data = [p for p in (folder / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data
    for path in data:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  else:
    (folder / "meta" / "metadata").write_text("{not json")


@pytest.mark.parametrize("damage", ["no_state", "empty_step_folder", "bad_meta"])
def test_a_damaged_only_checkpoint_is_an_error_naming_its_folder(tmp_path, state, damage):
  checkpoints = RunCheckpoints(tmp_path)
  checkpoints.save_latest(3, state, {"best_step": 0})
  checkpoints.close()
  folder = tmp_path / "checkpoints" / "3"
  damage_checkpoint(folder, damage)
  reopened = RunCheckpoints(tmp_path)
  expected = rf"checkpoint {re.escape(str(folder))} \(latest, step \d+\) could not be restored"
  with pytest.raises(ValueError, match=expected) as error:
    reopened.restore("latest", state)
  reopened.close()
  assert "delete" in str(error.value)
  assert folder.exists()  # nothing restores: nothing is moved (it may be a different model)


@pytest.mark.parametrize("damage", ["truncated_arrays", "empty_step_folder", "bad_meta"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, damage, capsys):
  older, newer = make_state(seed=1), make_state(seed=2)
  checkpoints = RunCheckpoints(tmp_path, keep=2)
  checkpoints.save_latest(3, older, {"best_step": 3})
  checkpoints.save_latest(6, newer, {"best_step": 6})
  checkpoints.close()
  damage_checkpoint(tmp_path / "checkpoints" / "6", damage)
  reopened = RunCheckpoints(tmp_path, keep=2)
  restored, meta, step = reopened.restore("latest", newer)
  assert (step, meta) == (3, {"best_step": 3})
  assert_same_state(restored.params, older.params)
  warning = " ".join(capsys.readouterr().err.split())
  assert f"checkpoint {tmp_path / 'checkpoints' / '6'} (latest, step 6) could not be" in warning
  assert "Resuming from the previous checkpoint (step 3)" in warning
  # the damaged one is kept aside for inspection, out of the manager's way: step 6 saves again
  assert (tmp_path / "checkpoints_damaged" / "6").is_dir()
  assert step_dirs(tmp_path / "checkpoints") == [3]
  reopened.save_latest(6, newer, {"best_step": 6})
  again, _, step = reopened.restore("latest", older)
  reopened.close()
  assert step == 6
  assert_same_state(again.params, newer.params)


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, state, monkeypatch):
  checkpoints = RunCheckpoints(tmp_path, keep=1)
  checkpoints.save_latest(3, state, {"best_step": 3})
  manager_save = type(checkpoints.latest).save

  def full_disk(manager, step, *args, **kwargs):  # Orbax has begun its temporary folder
    (tmp_path / "checkpoints" / f"{step}.orbax-checkpoint-tmp-99").mkdir()
    raise RuntimeError("tensorstore write failed") from OSError(errno.ENOSPC, "write error")

  monkeypatch.setattr(type(checkpoints.latest), "save", full_disk)
  with pytest.raises(CheckpointDiskFull) as error:
    checkpoints.save_latest(6, make_state(seed=5), {"best_step": 6})
  message = str(error.value)
  assert f"disk full while writing checkpoint step 6 to {tmp_path / 'checkpoints'}" in message
  assert f"the previous checkpoint {tmp_path / 'checkpoints' / '3'} is intact" in message
  assert not list((tmp_path / "checkpoints").glob("6.*"))  # the partial write is removed
  monkeypatch.setattr(type(checkpoints.latest), "save", manager_save)
  restored, _, step = checkpoints.restore("latest", make_state(seed=7))
  checkpoints.close()
  assert step == 3
  assert_same_state(restored.params, state.params)
  # tensorstore's errors carry only the text; any other failure is not called a full disk
  assert checkpoints_module._is_disk_full(ValueError("RESOURCE_EXHAUSTED: No space left on device"))
  assert not checkpoints_module._is_disk_full(RuntimeError("permission denied"))


def test_a_save_that_fails_midway_never_removes_the_previous_checkpoint(tmp_path, state):
  """keep=1: Orbax may delete the old checkpoint only once the new one is complete. A save whose
  second item (the meta JSON) fails after the state was written leaves step 3 whole."""
  checkpoints = RunCheckpoints(tmp_path, keep=1)
  checkpoints.save_latest(3, state, {"best_step": 3})
  with pytest.raises(Exception):
    checkpoints.save_latest(6, make_state(seed=4), {"unserialisable": object()})
  assert step_dirs(tmp_path / "checkpoints") == [3]
  restored, meta, step = checkpoints.restore("latest", make_state(seed=9))
  checkpoints.close()
  assert (step, meta) == (3, {"best_step": 3})
  assert_same_state(restored.params, state.params)


def test_restoring_into_a_different_model_is_an_error_naming_the_folder(tmp_path, state):
  checkpoints = RunCheckpoints(tmp_path)
  checkpoints.save_best(4, state, {})
  other = state.replace(params={**state.params, "embed": jnp.zeros(9, jnp.int32)})
  with pytest.raises(ValueError, match=re.escape(f"checkpoint {tmp_path / 'best' / '4'} ")):
    checkpoints.restore("best", other)
  checkpoints.close()
