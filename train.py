"""Trains one model on one LRA task: `python train.py --config=configs/x.py[:quick] --workdir=runs/x`.

All logic is in `train_and_evaluate(config, workdir)`; `main()` only parses flags. A killed
run started again with the same command resumes from its latest checkpoint and ends with the
same metrics as an uninterrupted run: batches, dropout keys and evaluation depend only on the
seed and the step.
"""
from __future__ import annotations

from lra import malloc

malloc.keep_freed_memory()  # before jax starts its threads: see lra/malloc.py

import functools  # pylint: disable=wrong-import-position
import json
import logging
import sys
import time
from pathlib import Path

from typing import Any  # pylint: disable=wrong-import-position

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lra import batches as batch_lib
from lra import optim, run_log
from lra.checkpoints import RunCheckpoints
from lra.tasks import load_task
from models import build_model


class TrainState(train_state.TrainState):
  """Flax's train state plus the model's `batch_stats` (BatchNorm's running averages, for the
  `config.model.norm="batch"` recipes; an empty dict otherwise)."""
  batch_stats: Any = flax.struct.field(default_factory=dict)

  @property
  def variables(self) -> dict:
    """What `model.apply` takes for evaluation: params, and batch_stats where there are any."""
    return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats
                                      else {})}


# ---------------------------------------------------------------------------- model and steps
def model_for(config: ml_collections.ConfigDict, task: batch_lib.TaskData):
  return build_model(config.model, vocab_size=task.vocab_size, num_classes=task.num_classes,
                     max_len=task.max_length, pair=task.pair)


def example_batch(task: batch_lib.TaskData, batch_size: int) -> dict:
  batch = task.splits["train"].batch(np.arange(min(batch_size, len(task.splits["train"]))))
  return {k: v for k, v in batch.items() if k != "targets"}


def create_state(config, task, model) -> TrainState:
  init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  batch = example_batch(task, 2)
  variables = jax.jit(lambda rng: model.init(rng, batch))(init_rng)
  return TrainState.create(apply_fn=model.apply, params=variables["params"],
                           tx=optim.make_optimizer(config.train),
                           batch_stats=variables.get("batch_stats", {}))


def cross_entropy(logits, targets):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def train_step(state: TrainState, batch: dict, dropout_root):
  """One optimiser step; the dropout key is derived from the step, so resuming is exact."""
  dropout_rng = jax.random.fold_in(dropout_root, state.step)

  def loss_fn(params):
    variables = {"params": params}
    if state.batch_stats:  # BatchNorm: batch statistics in training, running averages updated
      (logits, _), updates = state.apply_fn(
          {**variables, "batch_stats": state.batch_stats}, batch, deterministic=False,
          rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
      batch_stats = updates["batch_stats"]
    else:
      logits, _ = state.apply_fn(variables, batch, deterministic=False,
                                 rngs={"dropout": dropout_rng})
      batch_stats = state.batch_stats
    return cross_entropy(logits, batch["targets"]).mean(), (logits, batch_stats)

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  accuracy = (logits.argmax(-1) == batch["targets"]).mean()
  return state, {"loss": loss, "accuracy": accuracy}


def eval_step(variables, batch: dict, apply_fn):
  """Sums over the valid rows of a (possibly padded) evaluation batch; `variables` is
  `TrainState.variables` (params, and BatchNorm's running averages where there are any)."""
  logits, _ = apply_fn(variables, batch, deterministic=True)
  valid = batch["valid"].astype(jnp.float32)
  return {"loss_sum": (cross_entropy(logits, batch["targets"]) * valid).sum(),
          "correct": ((logits.argmax(-1) == batch["targets"]) * valid).sum(),
          "count": valid.sum()}


class Steps:
  """The jitted steps, written against a device mesh (batch split over 'data')."""

  def __init__(self, state: TrainState, batch_size: int):
    devices = jax.devices()
    if batch_size % len(devices):
      raise ValueError(f"config.train.batch_size={batch_size} must be divisible by the "
                       f"{len(devices)} devices of the data mesh")
    self.mesh = Mesh(np.asarray(devices), ("data",))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.data = NamedSharding(self.mesh, PartitionSpec("data"))
    self.train = jax.jit(train_step, in_shardings=(self.replicated, self.data, None),
                         out_shardings=(self.replicated, self.replicated), donate_argnums=0)
    self.eval = jax.jit(functools.partial(eval_step, apply_fn=state.apply_fn),
                        in_shardings=(self.replicated, self.data),
                        out_shardings=self.replicated)

  def put_state(self, state):
    return jax.device_put(state, self.replicated)

  def put_batch(self, batch):
    return jax.device_put(batch, self.data)


def evaluate(steps: Steps, variables: dict, split: batch_lib.Split, batch_size: int,
             max_batches: int = 0) -> dict:
  totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
  for batch in batch_lib.eval_batches(split, batch_size, max_batches or None):
    out = jax.device_get(steps.eval(variables, steps.put_batch(batch)))
    for key in totals:
      totals[key] += float(out[key])
  count = max(totals["count"], 1.0)
  return {"accuracy": totals["correct"] / count, "loss": totals["loss_sum"] / count,
          "examples": int(totals["count"])}


def count_params(params) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def compiled_memory_bytes(compiled) -> int | None:
  """XLA's planned memory for one train step (None where the backend does not report it)."""
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
             + stats.output_size_in_bytes - stats.alias_size_in_bytes)


# ---------------------------------------------------------------------------- the loop
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Trains, evaluates, checkpoints; returns (and writes) the run's results.json."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  started = time.time()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  run_log.check_or_write_config(workdir, config)
  task = load_task(config)
  logging.info(task.describe())
  print(task.describe(), flush=True)
  cfg = config.train

  model = model_for(config, task)
  state = create_state(config, task, model)
  checkpoints = RunCheckpoints(workdir, cfg.keep_checkpoints)
  meta = {"best_accuracy": -1.0, "best_step": 0}
  restored = checkpoints.restore("latest", state)
  if restored is not None:
    state, meta, _ = restored
    print(f"resuming from step {int(state.step)} ({workdir / 'checkpoints'})", flush=True)
  start_step = int(state.step)
  steps = Steps(state, cfg.batch_size)
  state = steps.put_state(state)
  dropout_root = jax.random.fold_in(jax.random.key(config.seed), 1)
  log = run_log.MetricsLog(workdir, start_step)

  train_iter = batch_lib.train_batches(task.splits["train"], cfg.batch_size, config.seed,
                                       start_step)
  window, window_start, timed_steps, timed_seconds = [], time.time(), 0, 0.0
  memory_bytes, compiled_train = None, None
  schedule = optim.learning_rate_schedule(cfg)
  final_validation = None  # the loop's last evaluation, when it covers the whole split
  bar = tqdm(range(start_step, cfg.num_train_steps), initial=start_step,
             total=cfg.num_train_steps, desc=f"{config.model.attention}/{config.task}",
             dynamic_ncols=True)
  try:
    for step in bar:
      batch = steps.put_batch(next(train_iter))
      if compiled_train is None:  # compile once; every batch has the same shapes
        compiled_train = steps.train.lower(state, batch, dropout_root).compile()
        memory_bytes = compiled_memory_bytes(compiled_train)
        malloc.limit_to_step(memory_bytes)  # bounded heap for big steps: see lra/malloc.py
      state, metrics = compiled_train(state, batch, dropout_root)
      window.append(metrics)
      done = step + 1
      if done % cfg.log_every == 0 or done == cfg.num_train_steps:
        values = jax.device_get(window)
        elapsed = time.time() - window_start
        if step > start_step:  # the first window holds compilation
          timed_steps, timed_seconds = timed_steps + len(window), timed_seconds + elapsed
        mean = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        mean["steps_per_s"] = len(window) / max(elapsed, 1e-9)
        mean["learning_rate"] = float(schedule(step))
        log.write(done, "train", mean)
        bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['accuracy']:.3f}",
                        steps_s=f"{mean['steps_per_s']:.1f}")
        window, window_start = [], time.time()
      if done % cfg.eval_every == 0 or done == cfg.num_train_steps:
        result = evaluate(steps, state.variables, task.splits["validation"], cfg.batch_size,
                          cfg.eval_batches)
        log.write(done, "validation", {k: result[k] for k in ("accuracy", "loss")})
        if done == cfg.num_train_steps and not cfg.eval_batches:
          final_validation = result
        if result["accuracy"] > meta["best_accuracy"]:
          meta = {"best_accuracy": result["accuracy"], "best_step": done}
          checkpoints.save_best(done, state, meta)
        window_start = time.time()
      if done % cfg.checkpoint_every == 0 or done == cfg.num_train_steps:
        checkpoints.save_latest(done, state, meta)
        window_start = time.time()
  finally:
    bar.close()
    log.close()

  results = {"task": config.task, "attention": config.model.attention,
             "steps": int(state.step), "parameters": count_params(state.params),
             "splits": {}, "best_validation": meta, "task_sizes": task.sizes(),
             "skipped_examples": task.skipped,  # e.g. Pathfinder's empty PNGs, per split
             "steps_per_s": timed_steps / timed_seconds if timed_seconds else None,
             "compiled_train_step_memory_bytes": memory_bytes,
             "peak_rss_bytes": run_log.peak_rss_bytes(), "versions": run_log.versions(),
             "devices": [str(d) for d in jax.devices()], "config": config.to_dict()}
  results["splits"]["validation"] = final_validation or evaluate(
      steps, state.variables, task.splits["validation"], cfg.batch_size)
  if task.splits["test"].inputs is task.splits["validation"].inputs:  # e.g. IMDb
    results["splits"]["test"] = dict(results["splits"]["validation"])
  else:
    results["splits"]["test"] = evaluate(steps, state.variables, task.splits["test"],
                                         cfg.batch_size)
  test_counts = task.splits["test"].label_counts(task.num_classes)
  results["test_majority_class_rate"] = float(test_counts.max() / test_counts.sum())
  best = checkpoints.restore("best", state)
  if best is not None:  # the final state is often the best one: no second evaluation then
    results["test_at_best_validation"] = (
        dict(results["splits"]["test"]) if best[2] == results["steps"] else
        evaluate(steps, steps.put_state(best[0]).variables, task.splits["test"], cfg.batch_size))
  checkpoints.close()
  results["wall_time_s"] = time.time() - started
  previous = workdir / "results.json"
  if previous.exists():  # keep what eval.py added
    old = json.loads(previous.read_text())
    results["eval"] = old.get("eval", {})
  run_log.write_json(workdir / "results.json", results)
  test = results["splits"]["test"]
  print(f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}, "
        f"{test['examples']} examples); majority-class rate of the test set "
        f"{results['test_majority_class_rate']:.4f}", flush=True)
  return results


def main():
  from absl import app, flags  # pylint: disable=import-outside-toplevel
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  from configs import defaults  # pylint: disable=import-outside-toplevel
  from lra import cli  # pylint: disable=import-outside-toplevel

  config_flags.DEFINE_config_file("config", None, "A config file, e.g. configs/x.py:quick",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Run directory (created; resumed when it exists).")
  flags.mark_flags_as_required(["config", "workdir"])
  def run(argv):
    if len(argv) > 1:
      cli.fail(f"unexpected arguments {argv[1:]}; flags are written --name=value")
    config = flags.FLAGS.config
    try:  # before any data is loaded: an unknown attention or setting is a one-line error
      defaults.check_attention(config.model)
    except ValueError as error:
      cli.fail(error)
    if not any(a.split("=")[0] in ("--verbosity", "-v", "--v") for a in sys.argv[1:]):
      # Orbax and JAX are chatty at INFO; --verbosity=0 brings it back
      absl_logging.set_verbosity(absl_logging.WARNING)
      logging.getLogger().setLevel(logging.WARNING)
    train_and_evaluate(config, flags.FLAGS.workdir)

  # A command-line mistake (misspelt field, wrong type, unknown preset) is one line, no traceback.
  app.run(run, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  main()
