"""Trains one model on one LRA task: `python train.py --config=configs/x.py[:quick] --workdir=runs/x`.

All logic is in `train_and_evaluate(config, workdir)`; `main()` only parses flags. A killed
run started again with the same command resumes from its latest checkpoint and ends with the
same metrics as an uninterrupted run: batches, dropout keys and evaluation depend only on the
seed and the step.

Scale-out (README "Scale out and faults"): the step runs over a mesh of every device of every
host (lra/parallel.py; data parallel, or FSDP with `config.train.fsdp`), several hosts through
`jax.distributed` (`--coordinator/--num_processes/--process_id`, a SLURM step, or
`--distributed`), batches from the Grain pipeline (lra/pipeline.py) with its state in the
checkpoint, `config.train.grad_accum_steps` micro-batches per step. Faults: SIGTERM/SIGINT save
a checkpoint and exit 128+signal; a NaN/Inf step is never applied (`config.train.nan_policy`);
damaged checkpoints and a full disk are lra/checkpoints.py's.
"""
from __future__ import annotations

from lra import malloc

malloc.keep_freed_memory()  # before jax starts its threads: see lra/malloc.py

import functools  # pylint: disable=wrong-import-position
import json
import math
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
from jax.sharding import NamedSharding, PartitionSpec

from lra import batches as batch_lib
from lra import faults, optim, parallel, pipeline, run_log
from lra.checkpoints import CheckpointDiskFull, RunCheckpoints
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
                     max_len=task.max_length, pair=task.pair, mode=task.mode,
                     target_len=task.target_length)


def example_batch(task: batch_lib.TaskData, batch_size: int) -> dict:
  batch = task.splits["train"].batch(np.arange(min(batch_size, len(task.splits["train"]))))
  return {k: v for k, v in batch.items() if k != "targets"}


def state_initializer(config, task, model):
  """A function of no arguments that builds the initial TrainState (to jit into its shardings).
  Parameters are float32 whatever `config.model.dtype` is (the modules' param_dtype); so is the
  optimizer state."""
  init_rng = jax.random.fold_in(jax.random.key(config.seed), 0)
  batch = example_batch(task, 2)

  def init() -> TrainState:
    variables = model.init(init_rng, batch)
    return TrainState.create(apply_fn=model.apply, params=variables["params"],
                             tx=optim.make_optimizer(config.train),
                             batch_stats=variables.get("batch_stats", {}))
  return init


def create_state(config, task, model) -> TrainState:
  """The initial TrainState on the default device (tests, eval.py); the loop builds it sharded."""
  return jax.jit(state_initializer(config, task, model))()


def cross_entropy(logits, targets):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)


def row_metrics(logits, batch: dict) -> dict:
  """Per row of the batch: summed cross-entropy, correct predictions and how many count.
  Classification (targets `[B]`): one per row. Token-level tasks (targets `[B, T]`, decoder
  LM / encoder-decoder): sums over the target tokens `weights` marks, and `exact` (every counted
  token of the row right: a whole copy, a recalled value)."""
  targets = batch["targets"]
  loss = cross_entropy(logits, targets)
  correct = (logits.argmax(-1) == targets).astype(jnp.float32)
  if targets.ndim == 1:
    return {"loss_sum": loss, "correct": correct, "count": jnp.ones_like(loss)}
  weights = batch["weights"].astype(jnp.float32)
  return {"loss_sum": (loss * weights).sum(-1), "correct": (correct * weights).sum(-1),
          "count": weights.sum(-1),
          "exact": jnp.all((correct > 0) | (weights == 0), axis=-1).astype(jnp.float32)}


def micro_batches(batch: dict, count: int) -> dict:
  """`[B, ...]` -> `[count, B/count, ...]`; micro-batch j holds rows j, j+count, j+2*count...
  so that each device's rows of the data-sharded batch feed every micro-batch equally."""
  def split(x):
    x = x.reshape(x.shape[0] // count, count, *x.shape[1:])
    return jnp.swapaxes(x, 0, 1)
  return jax.tree_util.tree_map(split, batch)


def train_step(state: TrainState, batch: dict, dropout_root, *, accum_steps: int = 1):
  """One optimiser step; the dropout key is derived from the step, so resuming is exact.

  With `accum_steps` > 1 the batch is split into that many micro-batches whose gradients are
  averaged (a scan: activation memory of one micro-batch), so the update equals one step on
  the whole batch (BatchNorm's running averages are updated once per micro-batch). A NaN or Inf
  loss or gradient leaves the parameters, optimizer and BatchNorm state as they were (the step
  counter still advances, so batch and dropout keys stay those of the step) and reports
  `nonfinite` = 1; train.py stops or counts it (`config.train.nan_policy`)."""
  dropout_rng = jax.random.fold_in(dropout_root, state.step)

  def loss_fn(params, batch_stats, batch, rng):
    variables = {"params": params}
    if batch_stats:  # BatchNorm: batch statistics in training, running averages updated
      (logits, _), updates = state.apply_fn(
          {**variables, "batch_stats": batch_stats}, batch, deterministic=False,
          rngs={"dropout": rng}, mutable=["batch_stats"])
      batch_stats = updates["batch_stats"]
    else:
      logits, _ = state.apply_fn(variables, batch, deterministic=False, rngs={"dropout": rng})
    rows = row_metrics(logits, batch)  # token tasks: the mean over counted target tokens
    count = jnp.maximum(rows["count"].sum(), 1.0)
    loss = rows["loss_sum"].sum() / count
    correct = rows["correct"].sum() / count
    return loss, (correct, batch_stats)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if accum_steps == 1:
    (loss, (accuracy, batch_stats)), grads = grad_fn(state.params, state.batch_stats, batch,
                                                      dropout_rng)
  else:
    def accumulate(carry, micro):
      grads_sum, loss_sum, correct_sum, batch_stats, index = carry
      (loss, (correct, batch_stats)), grads = grad_fn(
          state.params, batch_stats, micro, jax.random.fold_in(dropout_rng, index))
      grads_sum = jax.tree_util.tree_map(jnp.add, grads_sum, grads)
      return (grads_sum, loss_sum + loss, correct_sum + correct, batch_stats, index + 1), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    init = (zeros, jnp.float32(0), jnp.float32(0), state.batch_stats, jnp.int32(0))
    (grads, loss, accuracy, batch_stats, _), _ = jax.lax.scan(
        accumulate, init, micro_batches(batch, accum_steps))
    grads = jax.tree_util.tree_map(lambda g: g / accum_steps, grads)
    loss, accuracy = loss / accum_steps, accuracy / accum_steps

  finite = jnp.isfinite(loss) & jnp.all(jnp.asarray(
      [jnp.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads)]))
  updated = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  keep = lambda new, old: jnp.where(finite, new, old)
  state = updated.replace(params=jax.tree_util.tree_map(keep, updated.params, state.params),
                          opt_state=jax.tree_util.tree_map(keep, updated.opt_state,
                                                           state.opt_state),
                          batch_stats=jax.tree_util.tree_map(keep, updated.batch_stats,
                                                             state.batch_stats))
  return state, {"loss": loss, "accuracy": accuracy,
                 "nonfinite": 1.0 - finite.astype(jnp.float32)}


def eval_step(variables, batch: dict, apply_fn):
  """Sums over the valid rows of a (possibly padded) evaluation batch; `variables` is
  `TrainState.variables` (params, and BatchNorm's running averages where there are any). The
  batch is split over every host's devices and the sums are replicated: every host gets the
  totals over all hosts' rows."""
  logits, _ = apply_fn(variables, batch, deterministic=True)
  valid = batch["valid"].astype(jnp.float32)
  sums = {k: (v * valid).sum() for k, v in row_metrics(logits, batch).items()}
  if "exact" in sums:
    sums["rows"] = valid.sum()
  return sums


class Steps:
  """The jitted steps over a mesh of all devices (lra/parallel.py): the batch split over
  'data'; parameters and optimizer state replicated, or sharded over the same axis (`fsdp`)."""

  def __init__(self, state: TrainState, batch_size: int, *, fsdp: bool = False,
               accum_steps: int = 1, devices=None):
    self.mesh = parallel.data_mesh(devices)
    parallel.check_batch_split(batch_size, self.mesh)
    if accum_steps < 1 or batch_size % accum_steps or (
        (batch_size // accum_steps) % self.mesh.devices.size):
      raise ValueError(
          f"config.train.grad_accum_steps={accum_steps} must divide config.train.batch_size="
          f"{batch_size} into micro-batches that the {self.mesh.devices.size} devices split "
          "evenly (batch_size % (grad_accum_steps * devices) == 0)")
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.data = NamedSharding(self.mesh, PartitionSpec(parallel.AXIS))
    self.state_sharding = parallel.state_shardings(state, self.mesh, fsdp)
    self.train = jax.jit(functools.partial(train_step, accum_steps=accum_steps),
                         in_shardings=(self.state_sharding, self.data, None),
                         out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    self.eval = jax.jit(functools.partial(eval_step, apply_fn=state.apply_fn),
                        in_shardings=(None, self.data), out_shardings=self.replicated)

  def init_state(self, initializer) -> TrainState:
    """Builds the initial state directly in its shardings (no host holds all of FSDP's)."""
    return jax.jit(initializer, out_shardings=self.state_sharding)()

  def put_state(self, state):
    return jax.device_put(state, self.state_sharding)

  def put_batch(self, batch):
    """This process's rows of a batch -> a global array split over the mesh."""
    return parallel.put_global_batch(batch, self.data)


def evaluate(steps: Steps, variables: dict, split: batch_lib.Split, batch_size: int,
             max_batches: int = 0) -> dict:
  """Accuracy and loss over the split (token-level tasks: over the counted target tokens, plus
  `sequence_accuracy`: rows with every counted token right, and bits per token)."""
  totals: dict[str, float] = {}
  for batch in pipeline.eval_input(split, batch_size, process_index=jax.process_index(),
                                   process_count=jax.process_count(),
                                   max_batches=max_batches or None):
    out = jax.device_get(steps.eval(variables, steps.put_batch(batch)))
    for key, value in out.items():
      totals[key] = totals.get(key, 0.0) + float(value)
  count = max(totals.get("count", 0.0), 1.0)
  result = {"accuracy": totals.get("correct", 0.0) / count,
            "loss": totals.get("loss_sum", 0.0) / count}
  if "rows" not in totals:
    return {**result, "examples": int(totals.get("count", 0.0))}
  return {**result, "examples": int(totals["rows"]), "tokens": int(totals["count"]),
          "sequence_accuracy": totals["exact"] / max(totals["rows"], 1.0),
          "bits_per_token": result["loss"] / math.log(2)}


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
class _NoLog:
  """What processes other than 0 log: nothing (process 0 writes metrics and TensorBoard)."""

  def write(self, *args):
    pass

  def close(self):
    pass


class _Profile:
  """`config.train.profile_steps = (first, last)`: a JAX profiler trace of those steps (1-based,
  inclusive) in the run's TensorBoard folder (its Profile tab, with tensorboard-plugin-profile)."""

  def __init__(self, steps, logdir: Path):
    self.first, self.last = (int(steps[0]), int(steps[1])) if steps else (0, 0)
    if self.first > self.last or (self.first <= 0 < self.last):
      raise ValueError(f"config.train.profile_steps={tuple(steps)}: expected (first, last) with "
                       "1 <= first <= last, or (0, 0) for no trace")
    self.logdir, self.active = logdir, False

  def before(self, done: int):
    if self.first and done == self.first:
      jax.profiler.start_trace(str(self.logdir))
      self.active = True

  def after(self, done: int, metrics):
    if self.active and done >= self.last:
      jax.block_until_ready(metrics)
      jax.profiler.stop_trace()
      self.active = False
      print(f"profiler trace of steps {self.first}-{self.last} written to {self.logdir}",
            flush=True)

  def close(self):
    if self.active:
      jax.profiler.stop_trace()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
  """Trains, evaluates, checkpoints; returns (and writes) the run's results.json.

  Raises `faults.Preempted` after saving a checkpoint when SIGTERM/SIGINT arrives, and
  `faults.NonFiniteLoss` on a NaN/Inf loss or gradient under nan_policy "stop"."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel

  started = time.time()
  main_process = parallel.is_main_process()
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  if main_process:
    run_log.check_or_write_config(workdir, config)
  task = load_task(config)
  logging.info(task.describe())
  if main_process:
    print(task.describe(), flush=True)
  cfg = config.train
  if cfg.nan_policy not in ("stop", "skip"):
    raise ValueError(f"config.train.nan_policy={cfg.nan_policy!r}; expected 'stop' or 'skip'")
  profile = _Profile(cfg.profile_steps, workdir / "tensorboard")

  model = model_for(config, task)
  initializer = state_initializer(config, task, model)
  steps = Steps(jax.eval_shape(initializer), cfg.batch_size, fsdp=cfg.fsdp,
                accum_steps=cfg.grad_accum_steps)
  state = steps.init_state(initializer)
  checkpoints = RunCheckpoints(workdir, cfg.keep_checkpoints)
  meta = {"best_accuracy": -1.0, "best_step": 0, "skipped_steps": 0}
  make_input = lambda start: pipeline.train_input(
      task.splits["train"], cfg.batch_size, config.seed, start_step=start,
      process_index=jax.process_index(), process_count=jax.process_count(),
      workers=cfg.input_workers, prefetch=cfg.prefetch_batches)
  train_iter = make_input(0)
  restored = checkpoints.restore("latest", state, input_iter=train_iter)
  if restored is not None:
    state, meta, _ = restored
    meta.setdefault("skipped_steps", 0)
    if not checkpoints.restored_input:  # a checkpoint from before the pipeline kept its state
      train_iter = make_input(int(state.step))
    if main_process:
      print(f"resuming from step {int(state.step)} ({workdir / 'checkpoints'})", flush=True)
  start_step = int(state.step)
  dropout_root = jax.random.fold_in(jax.random.key(config.seed), 1)
  log = run_log.MetricsLog(workdir, start_step) if main_process else _NoLog()

  consumed = pipeline.ConsumedState(train_iter)  # the input state of the batches stepped on
  batches = pipeline.device_prefetch(consumed, steps.put_batch, cfg.prefetch_batches)
  # The steps since the last train log record; a checkpoint between log records keeps them
  # (meta["window"]), so a resumed run logs the same records as an uninterrupted one.
  window = [{k: np.float32(v) for k, v in m.items()} for m in meta.pop("window", [])]
  window_start, timed_steps, timed_seconds, compiled_window = time.time(), 0, 0.0, False
  window_first = start_step + 1 - len(window)
  memory_bytes, compiled_train = None, None
  schedule = optim.learning_rate_schedule(cfg)
  final_validation = None  # the loop's last evaluation, when it covers the whole split
  last_saved = start_step if restored is not None else None

  def check_window():
    """Stops on a non-finite step (policy "stop") before anything after it is saved."""
    if cfg.nan_policy != "stop" or not window:
      return
    bad = faults.first_nonfinite(jax.device_get(window), window_first)
    if bad is not None:
      last = (str(workdir / "checkpoints" / str(last_saved)) if last_saved is not None
              else "none (no checkpoint was written yet)")
      raise faults.NonFiniteLoss(faults.nonfinite_message(*bad, last))

  bar = tqdm(range(start_step, cfg.num_train_steps), initial=start_step,
             total=cfg.num_train_steps, desc=f"{config.model.attention}/{config.task}",
             dynamic_ncols=True, disable=not main_process)
  try:
    with faults.PreemptionGuard() as preemption:
      for step in bar:
        batch = next(batches)
        if compiled_train is None:  # compile once; every batch has the same shapes
          compiled_train = steps.train.lower(state, batch, dropout_root).compile()
          memory_bytes = compiled_memory_bytes(compiled_train)
          malloc.limit_to_step(memory_bytes)  # bounded heap for big steps: see lra/malloc.py
        done = step + 1
        profile.before(done)
        state, metrics = compiled_train(state, batch, dropout_root)
        profile.after(done, metrics)
        consumed.advance()
        window.append(metrics)
        if done % cfg.log_every == 0 or done == cfg.num_train_steps:
          check_window()
          values = jax.device_get(window)
          elapsed = time.time() - window_start
          if compiled_window:  # the first window after a start holds compilation
            timed_steps, timed_seconds = timed_steps + len(window), timed_seconds + elapsed
          else:  # used only when the run has no other window
            compiled_window = (len(window), elapsed)
          skipped = int(sum(v["nonfinite"] for v in values))
          meta["skipped_steps"] += skipped
          finite = [v for v in values if not v["nonfinite"]] or values
          mean = {k: float(np.mean([v[k] for v in finite])) for k in ("loss", "accuracy")}
          mean["skipped_steps"] = skipped
          mean["steps_per_s"] = len(window) / max(elapsed, 1e-9)
          mean["learning_rate"] = float(schedule(step))
          log.write(done, "train", mean)
          bar.set_postfix(loss=f"{mean['loss']:.3f}", acc=f"{mean['accuracy']:.3f}",
                          steps_s=f"{mean['steps_per_s']:.1f}")
          window, window_start, window_first = [], time.time(), done + 1
        if done % cfg.eval_every == 0 or done == cfg.num_train_steps:
          check_window()
          result = evaluate(steps, state.variables, task.splits["validation"], cfg.batch_size,
                            cfg.eval_batches)
          log.write(done, "validation", {k: result[k] for k in ("accuracy", "loss")})
          if done == cfg.num_train_steps and not cfg.eval_batches:
            final_validation = result
          if result["accuracy"] > meta["best_accuracy"]:
            meta = {**meta, "best_accuracy": result["accuracy"], "best_step": done}
            checkpoints.save_best(done, state, meta)
          window_start = time.time()
        stop = preemption.requested(done) and done < cfg.num_train_steps
        if done % cfg.checkpoint_every == 0 or done == cfg.num_train_steps or stop:
          check_window()
          pending = [{k: float(v) for k, v in m.items()} for m in jax.device_get(window)]
          checkpoints.save_latest(done, state, {**meta, "window": pending}, input_iter=consumed)
          last_saved = done
          window_start = time.time()
        if stop:
          raise faults.Preempted(done, preemption.signum, str(workdir / "checkpoints" / str(done)))
  finally:
    profile.close()
    bar.close()
    log.close()

  results = {"task": config.task, "attention": config.model.attention,
             "steps": int(state.step), "parameters": count_params(state.params),
             "splits": {}, "best_validation": {k: meta[k] for k in ("best_accuracy",
                                                                     "best_step")},
             "skipped_steps": meta["skipped_steps"],  # non-finite steps (nan_policy "skip")
             "task_sizes": task.sizes(),
             "skipped_examples": task.skipped,  # e.g. Pathfinder's empty PNGs, per split
             "steps_per_s": (timed_steps / timed_seconds if timed_seconds else
                             compiled_window[0] / compiled_window[1] if compiled_window else None),
             "compiled_train_step_memory_bytes": memory_bytes,
             "peak_rss_bytes": run_log.peak_rss_bytes(), "versions": run_log.versions(),
             "devices": [str(d) for d in jax.devices()], "processes": jax.process_count(),
             "config": config.to_dict()}
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
        evaluate(steps, best[0].variables, task.splits["test"], cfg.batch_size))
  checkpoints.close()
  if task.token_unit == "byte":  # one token per byte (byte_lm): bits per byte
    for split_result in [*results["splits"].values(), results.get("test_at_best_validation")]:
      if split_result is not None:
        split_result["bits_per_byte"] = split_result["bits_per_token"]
  results["wall_time_s"] = time.time() - started
  if not main_process:
    return results
  previous = workdir / "results.json"
  if previous.exists():  # keep what eval.py added
    old = json.loads(previous.read_text())
    results["eval"] = old.get("eval", {})
  run_log.write_json(workdir / "results.json", results)
  test = results["splits"]["test"]
  if "tokens" in test:
    bits = (f"{test['bits_per_byte']:.3f} bits/byte" if "bits_per_byte" in test
            else f"{test['bits_per_token']:.3f} bits/token")
    print(f"test token accuracy {test['accuracy']:.4f}, sequence accuracy "
          f"{test['sequence_accuracy']:.4f}, {bits} (loss {test['loss']:.4f}, "
          f"{test['examples']} sequences, {test['tokens']} target tokens); majority-token "
          f"rate {results['test_majority_class_rate']:.4f}", flush=True)
  else:
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
  flags.DEFINE_string("coordinator", "", "Multi-host: host:port of process 0 (with "
                      "--num_processes and --process_id).")
  flags.DEFINE_integer("num_processes", 0, "Multi-host: the number of processes.")
  flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index.")
  flags.DEFINE_bool("distributed", False, "Multi-host: let JAX detect the cluster (Cloud TPU "
                    "slice, SLURM, Open MPI) and start jax.distributed; a SLURM step with "
                    "several tasks is detected without it.")
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
    try:
      parallel.initialize_distributed(flags.FLAGS.coordinator, flags.FLAGS.num_processes,
                                      flags.FLAGS.process_id, flags.FLAGS.distributed)
    except ValueError as error:
      cli.fail(error)
    try:
      train_and_evaluate(config, flags.FLAGS.workdir)
    except faults.Preempted as stopped:  # a clean stop: the checkpoint is saved
      print(f"train.py: {stopped}", file=sys.stderr, flush=True)
      sys.exit(stopped.exit_status)
    except (faults.NonFiniteLoss, CheckpointDiskFull) as error:
      print(f"train.py: error: {error}", file=sys.stderr, flush=True)
      sys.exit(1)

  # A command-line mistake (misspelt field, wrong type, unknown preset) is one line, no traceback.
  app.run(run, flags_parser=cli.parse_flags)


if __name__ == "__main__":
  main()
