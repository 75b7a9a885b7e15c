"""train.py under faults: a NaN loss (stop naming the step, or skip and count), a damaged newest
checkpoint (resume from the previous one, same results), a profiler trace of chosen steps."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from configs import transformer_listops
from lra import batches as batch_lib
from lra import faults
from lra.checkpoints import RunCheckpoints

POISONED_STEP = 7  # 1-based: the step whose batch gets a NaN loss


def tiny_config(cache_dir, **train_overrides):
  config = transformer_listops.get_config("tiny")  # 12 steps, checkpoints every 4 (keep 2)
  config.cache_dir = cache_dir
  for key, value in train_overrides.items():
    setattr(config.train, key, value)
  return config


def poison_step(monkeypatch, config, step):
  """Makes the loss NaN on the training batch of `step` only: the batch is recognised by its
  targets (train batches depend only on seed and step), so the jitted step needs no hook."""
  task = train.load_task(config)
  batches = batch_lib.train_batches(task.splits["train"], config.train.batch_size, config.seed)
  targets = [next(batches)["targets"] for _ in range(config.train.num_train_steps)]
  poisoned = targets[step - 1]
  assert sum(np.array_equal(t, poisoned) for t in targets) == 1
  cross_entropy = train.cross_entropy

  def nan_on_that_batch(logits, batch_targets):
    loss = cross_entropy(logits, batch_targets)
    hit = (batch_targets.shape == poisoned.shape) and jnp.all(batch_targets == poisoned)
    return jnp.where(hit, jnp.nan, loss)

  monkeypatch.setattr(train, "cross_entropy", nan_on_that_batch)


def test_a_nan_loss_stops_naming_its_step_and_keeps_the_last_good_checkpoint(
    tmp_path, cache_dir, monkeypatch):
  # logs and evaluations only at the end: the checkpoint at step 8 is the first boundary after
  # the bad step, so the check before saving is what stops the run
  config = tiny_config(cache_dir, log_every=12, eval_every=12)
  poison_step(monkeypatch, config, POISONED_STEP)
  with pytest.raises(faults.NonFiniteLoss) as error:
    train.train_and_evaluate(config, tmp_path)
  message = str(error.value)
  assert message.startswith(f"step {POISONED_STEP}: the loss is not finite (loss=nan)")
  assert f"The last good checkpoint is {tmp_path / 'checkpoints' / '4'}" in message
  assert "nan_policy='skip'" in message
  # nothing after the bad step was saved, and the checkpoint left is whole
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved == [4]
  assert not (tmp_path / "results.json").exists()
  monkeypatch.undo()
  task = train.load_task(config)
  initial = train.create_state(config, task, train.model_for(config, task))
  checkpoints = RunCheckpoints(tmp_path)
  state, _, step = checkpoints.restore("latest", initial)
  checkpoints.close()
  assert step == 4 and int(state.step) == 4
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params))


def test_nan_policy_skip_drops_that_update_and_counts_it(tmp_path, cache_dir, monkeypatch):
  config = tiny_config(cache_dir, nan_policy="skip")
  poison_step(monkeypatch, config, POISONED_STEP)
  results = train.train_and_evaluate(config, tmp_path)
  assert results["steps"] == 12 and results["skipped_steps"] == 1
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  skipped = {r["step"]: r["skipped_steps"] for r in records if r["split"] == "train"}
  window = config.train.log_every
  assert skipped == {s: float(s == -(-POISONED_STEP // window) * window)
                     for s in range(window, 13, window)}
  # the logged loss is over the window's finite steps; everything stayed finite
  assert all(np.isfinite(r["loss"]) for r in records)
  assert np.isfinite(results["splits"]["test"]["loss"])


def test_the_step_leaves_the_state_unchanged_on_a_nan_gradient(cache_dir):
  config = tiny_config(cache_dir)
  task = train.load_task(config)
  state = train.create_state(config, task, train.model_for(config, task))
  steps = train.Steps(state, config.train.batch_size)
  batch = task.splits["train"].batch(np.arange(config.train.batch_size))
  # a NaN parameter makes the loss and every gradient NaN; the update must not be applied
  leaf_path = jax.tree_util.tree_leaves_with_path(state.params)[0][0]
  poisoned = jax.tree_util.tree_map_with_path(
      lambda path, x: x * jnp.nan if path == leaf_path else x, state.params)
  before = state.replace(params=poisoned)
  expected = jax.device_get((before.params, before.opt_state))  # the step donates its input
  after, metrics = steps.train(steps.put_state(before), steps.put_batch(batch), jax.random.key(0))
  assert float(metrics["nonfinite"]) == 1.0 and int(after.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(expected),
                  jax.tree_util.tree_leaves((after.params, after.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_with_the_same_results(
    tmp_path, cache_dir, capfd):
  """A run whose newest checkpoint (step 12) is truncated is started again: it warns, resumes
  from step 8, trains to 12 again and ends with exactly the first run's results."""
  config = tiny_config(cache_dir)
  first = train.train_and_evaluate(config, tmp_path)
  (tmp_path / "results.json").unlink()
  data = [p for p in (tmp_path / "checkpoints" / "12" / "state").rglob("*")
          if p.is_file() and p.parent.name == "d"]
  for path in data:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  capfd.readouterr()
  again = train.train_and_evaluate(config, tmp_path)
  out = capfd.readouterr()
  assert "Resuming from the previous checkpoint (step 8)" in " ".join(out.err.split())
  assert "resuming from step 8" in out.out
  assert (tmp_path / "checkpoints_damaged" / "12").is_dir()
  assert again["splits"] == first["splits"]
  assert again["best_validation"] == first["best_validation"]


def test_profile_steps_write_a_trace_for_tensorboard(tmp_path, cache_dir):
  config = tiny_config(cache_dir, profile_steps=(3, 4))
  train.train_and_evaluate(config, tmp_path)
  traces = list((tmp_path / "tensorboard" / "plugins" / "profile").rglob("*.xplane.pb"))
  assert traces and traces[0].stat().st_size > 0
  with pytest.raises(ValueError, match=r"profile_steps=\(4, 3\): expected \(first, last\)"):
    train.train_and_evaluate(tiny_config(cache_dir, profile_steps=(4, 3)), tmp_path / "bad")
