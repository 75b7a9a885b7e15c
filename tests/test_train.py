"""train.py: an end-to-end tiny run, its run directory, and exact resume after SIGKILL and
after SIGTERM (preemption)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import train
from configs import transformer_listops
from lra.checkpoints import RunCheckpoints

ROOT = Path(__file__).resolve().parents[1]
# Long enough that a kill lands mid-run; tiny enough to take seconds.
RESUME_OVERRIDES = ["--config.train.num_train_steps=240", "--config.train.checkpoint_every=20",
                    "--config.train.eval_every=40", "--config.train.log_every=10",
                    "--config.train.batch_size=32", "--config.model.emb_dim=32",
                    "--config.model.qkv_dim=32", "--config.model.mlp_dim=64"]


def tiny_config(cache_dir):
  config = transformer_listops.get_config("tiny")
  config.cache_dir = cache_dir
  return config


def run_train(workdir, cache_dir, extra=(), wait=True):
  cmd = [sys.executable, "train.py", "--config=configs/transformer_listops.py:tiny",
         f"--workdir={workdir}", f"--config.cache_dir={cache_dir}", *RESUME_OVERRIDES, *extra]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if wait:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)


def direct_metrics(model, params, split):
  """Accuracy and mean cross-entropy of `params` on the whole split in one unpadded batch,
  written here without train.evaluate / train.eval_step (the code under test)."""
  batch = split.batch(np.arange(len(split)))
  targets = batch.pop("targets")
  logits, _ = model.apply({"params": params}, batch, deterministic=True)
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64), axis=-1)
  loss = -np.take_along_axis(np.asarray(log_probs), targets[:, None], axis=-1).mean()
  return float((np.asarray(logits).argmax(-1) == targets).mean()), float(loss)


def test_tiny_run_writes_a_self_describing_run_dir(tmp_path, cache_dir, monkeypatch):
  # The best validation step is made the middle evaluation (step 8) by adding 1 to the accuracy
  # measured there, so `test_at_best_validation` must come from a checkpoint other than the
  # final state: a run that reported the final state's test accuracy there passed before.
  evaluate, validation_calls = train.evaluate, []

  def best_at_the_second_evaluation(steps, params, split, batch_size, max_batches=0):
    result = evaluate(steps, params, split, batch_size, max_batches)
    if split.name == "validation":
      validation_calls.append(result["accuracy"])
      if len(validation_calls) == 2:
        result = dict(result, accuracy=result["accuracy"] + 1.0)
    return result

  monkeypatch.setattr(train, "evaluate", best_at_the_second_evaluation)
  config = tiny_config(cache_dir)
  results = train.train_and_evaluate(config, tmp_path)
  monkeypatch.undo()
  on_disk = json.loads((tmp_path / "results.json").read_text())
  assert on_disk["splits"] == json.loads(json.dumps(results["splits"]))
  for split in ("validation", "test"):
    assert 0.0 <= on_disk["splits"][split]["accuracy"] <= 1.0
    assert on_disk["splits"][split]["examples"] == 64
  assert on_disk["steps"] == 12 and on_disk["parameters"] > 0
  assert on_disk["versions"]["jax"] and on_disk["wall_time_s"] > 0
  assert on_disk["compiled_train_step_memory_bytes"] > 0
  assert 0 < on_disk["test_majority_class_rate"] <= 1
  assert json.loads((tmp_path / "config.json").read_text())["model"]["attention"] == "transformer"
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert {r["split"] for r in records} == {"train", "validation"}
  assert [r["step"] for r in records if r["split"] == "validation"] == [4, 8, 12]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [8, 12]
  # TensorBoard (installed by requirements.txt, as the README's `tensorboard --logdir` needs)
  # reads the events back: the validation accuracy at the steps metrics.jsonl records
  events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
  events.Reload()
  accuracy = events.Scalars("validation/accuracy")
  assert [e.step for e in accuracy] == [4, 8, 12]
  last = [r for r in records if r["split"] == "validation"][-1]
  assert accuracy[-1].value == pytest.approx(last["accuracy"])

  # test_at_best_validation: the best checkpoint (step 8), restored and evaluated here
  assert len(validation_calls) == 3
  assert on_disk["best_validation"] == {"best_accuracy": pytest.approx(validation_calls[1] + 1),
                                        "best_step": 8}
  task = train.load_task(config)
  model = train.model_for(config, task)
  initial = train.create_state(config, task, model)
  checkpoints = RunCheckpoints(tmp_path)
  best_state, _, best_step = checkpoints.restore("best", initial)
  last_state, _, last_step = checkpoints.restore("latest", initial)
  checkpoints.close()
  assert (best_step, last_step) == (8, 12)
  at_best = on_disk["test_at_best_validation"]
  accuracy, loss = direct_metrics(model, best_state.params, task.splits["test"])
  assert at_best["accuracy"] == pytest.approx(accuracy) and at_best["examples"] == 64
  assert at_best["loss"] == pytest.approx(loss, rel=1e-5)
  final_accuracy, final_loss = direct_metrics(model, last_state.params, task.splits["test"])
  assert on_disk["splits"]["test"]["loss"] == pytest.approx(final_loss, rel=1e-5)
  assert on_disk["splits"]["test"]["accuracy"] == pytest.approx(final_accuracy)
  # the run learned: every parameter array moved, and the training loss fell
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(initial.params),
                                                 jax.tree_util.tree_leaves(last_state.params))]
  assert all(moved), f"{moved.count(False)} of {len(moved)} parameter arrays never changed"
  train_loss = [r["loss"] for r in records if r["split"] == "train"]
  assert len(train_loss) == 6 and train_loss[-1] < train_loss[0] - 0.05, train_loss


def interrupt(workdir, cache_dir, signum, at_checkpoint=40):
  """Starts a run and sends `signum` once its checkpoint `at_checkpoint` exists."""
  proc = run_train(workdir, cache_dir, wait=False)
  deadline = time.time() + 300
  while not (workdir / "checkpoints" / str(at_checkpoint)).exists():
    assert proc.poll() is None, "run ended before it could be interrupted"
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(signum)
  proc.wait()
  return proc.returncode


def test_resume_after_sigkill_or_sigterm_matches_uninterrupted_run(tmp_path, cache_dir):
  """SIGKILL: the newest checkpoint survives. SIGTERM (preemption): the run finishes its step,
  saves a checkpoint at that step (not a multiple of checkpoint_every, mid log window) and exits
  with 128 + 15. Either way the resumed run ends exactly as the uninterrupted one: same
  results, same metrics.jsonl records."""
  full = tmp_path / "full"
  done = run_train(full, cache_dir)
  assert done.returncode == 0, done.stderr[-3000:]
  strip = lambda r: {k: v for k, v in r.items() if k != "steps_per_s"}
  metrics = lambda d: [strip(json.loads(l)) for l in (d / "metrics.jsonl").read_text().splitlines()]
  a = json.loads((full / "results.json").read_text())

  for signum in (signal.SIGKILL, signal.SIGTERM):
    stopped = tmp_path / signal.Signals(signum).name
    returncode = interrupt(stopped, cache_dir, signum)
    assert not (stopped / "results.json").exists()
    interrupted_at = max(int(p.name) for p in (stopped / "checkpoints").iterdir()
                         if p.name.isdigit())
    assert 40 <= interrupted_at < 240
    if signum == signal.SIGKILL:
      assert returncode == -signal.SIGKILL
    else:  # a clean stop: status 143, a message, a checkpoint of the step it stopped at
      assert returncode == 128 + signal.SIGTERM
      meta = json.loads((stopped / "checkpoints" / str(interrupted_at) / "meta" / "metadata")
                        .read_text())
      assert len(meta["window"]) == interrupted_at % 10  # the unlogged steps are kept
      assert (stopped / "checkpoints" / str(interrupted_at) / "input").is_dir()

    resumed = run_train(stopped, cache_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {interrupted_at}" in resumed.stdout
    b = json.loads((stopped / "results.json").read_text())
    assert a["splits"] == b["splits"]
    assert a["best_validation"] == b["best_validation"]
    assert a["test_at_best_validation"] == b["test_at_best_validation"]
    assert metrics(full) == metrics(stopped)
  # and the 240 steps learned: the training loss of the last window is well below the first's
  train_loss = [r["loss"] for r in metrics(full) if r["split"] == "train"]
  assert train_loss[-1] < 0.9 * train_loss[0], train_loss


def test_resume_with_a_different_config_is_refused(tmp_path, cache_dir):
  config = tiny_config(cache_dir)
  train.train_and_evaluate(config, tmp_path)
  other = tiny_config(cache_dir)
  other.model.emb_dim = 32
  with pytest.raises(ValueError, match="differs at model.emb_dim"):
    train.train_and_evaluate(other, tmp_path)


def test_unknown_attention_lists_registered_names(tmp_path, cache_dir):
  config = tiny_config(cache_dir)
  config.model.attention = "performr"
  with pytest.raises(ValueError, match=r"unknown attention 'performr'.*registered: .*transformer"):
    train.train_and_evaluate(config, tmp_path)


def test_misspelt_override_fails(tmp_path, cache_dir):
  out = run_train(tmp_path, cache_dir, extra=["--config.model.emb_dm=8"])
  assert out.returncode != 0
  assert "emb_dm" in out.stderr


def test_the_train_step_updates_parameters_and_fits_one_batch(cache_dir):
  """A step that never applied its gradients (`state.replace(step=state.step + 1)`) passed
  every end-to-end test, which checked step counts and finite losses (issue 16). Here the
  real jitted step, 40 times on one fixed batch without dropout, must fit that batch."""
  config = tiny_config(cache_dir)
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  task = train.load_task(config)
  state = train.create_state(config, task, train.model_for(config, task))
  initial = jax.device_get(state.params)
  steps = train.Steps(state, config.train.batch_size)
  batch = steps.put_batch(task.splits["train"].batch(np.arange(config.train.batch_size)))
  state, losses = steps.put_state(state), []
  for _ in range(40):
    state, metrics = steps.train(state, batch, jax.random.key(0))
    losses.append(float(metrics["loss"]))
  assert int(state.step) == 40
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(initial),
                                                 jax.tree_util.tree_leaves(state.params))]
  assert all(moved), f"{moved.count(False)} of {len(moved)} parameter arrays never changed"
  assert losses[-1] < 0.5 * losses[0], losses


def test_batch_not_divisible_by_the_devices_is_named():
  """With two (forced host) devices, a batch of 3 cannot be split over the data mesh, nor a
  batch of 4 into 4 micro-batches of 1 over 2 devices."""
  script = ("import train, jax, jax.numpy as jnp; assert len(jax.devices()) == 2\n"
            "state = train.TrainState(step=0, apply_fn=None, params={}, tx=None, opt_state=())\n"
            "train.Steps(state, 4)\n"
            "for size, accum in ((3, 1), (4, 4)):\n"
            "  try:\n    train.Steps(state, size, accum_steps=accum)\n"
            "  except ValueError as e:\n    print('ERROR', e)\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert ("ERROR config.train.batch_size=3 must be divisible by the 2 devices of the data mesh"
          in out.stdout), out.stdout
  assert ("ERROR config.train.grad_accum_steps=4 must divide config.train.batch_size=4 into "
          "micro-batches that the 2 devices split evenly" in out.stdout), out.stdout
