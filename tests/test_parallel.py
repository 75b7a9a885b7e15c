"""Devices and hosts: data parallel and FSDP over 4 (forced host) CPU devices give the loss curve
of one device; 2 processes under jax.distributed give the results of one; gradient accumulation
of 4 micro-batches is one step on the whole batch; FSDP's sharding rule."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import train
from configs import transformer_listops
from lra import parallel, pipeline

ROOT = Path(__file__).resolve().parents[1]
SIZES = dict(emb_dim=32, qkv_dim=32, mlp_dim=64)  # big enough that FSDP shards some arrays


def tiny_config(cache_dir, **model):
  config = transformer_listops.get_config("tiny")
  config.cache_dir = cache_dir
  for key, value in {**SIZES, **model}.items():
    setattr(config.model, key, value)
  return config


def subprocess_env(devices: int = 1) -> dict:
  flags = os.environ.get("XLA_FLAGS", "")
  if devices > 1:
    flags += f" --xla_force_host_platform_device_count={devices}"
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


FOUR_DEVICES = """
import json, sys
import jax, numpy as np
import train
from configs import transformer_listops
from lra import pipeline
assert len(jax.devices()) == 4, jax.devices()
config = transformer_listops.get_config("tiny")
config.cache_dir = sys.argv[1]
for key, value in json.loads(sys.argv[2]).items():
  setattr(config.model, key, value)
task = train.load_task(config)
model = train.model_for(config, task)
init = train.state_initializer(config, task, model)
batch_size, out = config.train.batch_size, {}
dropout_root = jax.random.key(3)
for name, devices, fsdp in (("one", jax.devices()[:1], False), ("dp", None, False),
                            ("fsdp", None, True)):
  steps = train.Steps(jax.eval_shape(init), batch_size, fsdp=fsdp, devices=devices)
  state = steps.init_state(init)
  batches = pipeline.train_input(task.splits["train"], batch_size, config.seed)
  losses = []
  for _ in range(6):
    state, metrics = steps.train(state, steps.put_batch(next(batches)), dropout_root)
    losses.append(float(metrics["loss"]))
  leaves = jax.tree_util.tree_leaves(state.params)
  out[name] = {
      "losses": losses, "params": [np.asarray(x).ravel().tolist() for x in leaves],
      "sharded": sum(not x.sharding.is_fully_replicated for x in leaves),
      "shard_rows": [x.addressable_shards[0].data.shape[0] for x in leaves if x.ndim],
      "devices": len(steps.mesh.devices.flat),
      "eval": train.evaluate(steps, state.variables, task.splits["validation"], batch_size)}
config.train.fsdp = True
results = train.train_and_evaluate(config, sys.argv[3])
out["train_and_evaluate"] = {"splits": results["splits"], "devices": len(results["devices"])}
print("RESULT" + json.dumps(out))
"""


def train_records(workdir: Path) -> list[dict]:
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: dict, b: dict, rel=1e-4):
  for split in ("validation", "test"):
    assert a[split]["accuracy"] == pytest.approx(b[split]["accuracy"], abs=1 / 64 + 1e-9)
    assert a[split]["loss"] == pytest.approx(b[split]["loss"], rel=rel)
    assert a[split]["examples"] == b[split]["examples"]


def test_four_devices_data_parallel_and_fsdp_give_the_one_device_loss_curve(tmp_path, cache_dir):
  script = subprocess.run(
      [sys.executable, "-c", FOUR_DEVICES, cache_dir, json.dumps(SIZES), str(tmp_path / "fsdp")],
      cwd=ROOT, env=subprocess_env(4), capture_output=True, text=True, timeout=900)
  assert script.returncode == 0, script.stderr[-4000:]
  out = json.loads(script.stdout.split("RESULT", 1)[1])
  one, dp, fsdp = out["one"], out["dp"], out["fsdp"]
  assert (one["devices"], dp["devices"], fsdp["devices"]) == (1, 4, 4)
  # data parallel replicates every parameter; FSDP shards the big ones over the 4 devices
  assert one["sharded"] == dp["sharded"] == 0 and fsdp["sharded"] >= 4
  assert min(fsdp["shard_rows"]) < max(fsdp["shard_rows"])
  for other in (dp, fsdp):  # 6 steps with dropout: the same curve and the same parameters
    np.testing.assert_allclose(other["losses"], one["losses"], rtol=1e-5)
    for a, b in zip(other["params"], one["params"]):
      np.testing.assert_allclose(a, b, atol=2e-5)
    assert other["eval"]["examples"] == one["eval"]["examples"] == 64
    assert other["eval"]["loss"] == pytest.approx(one["eval"]["loss"], rel=1e-5)
  assert one["losses"][-1] != one["losses"][0]
  # the whole loop with FSDP on 4 devices ends as the same run on this process's one device
  assert out["train_and_evaluate"]["devices"] == 4 and len(jax.devices()) == 1
  single = train.train_and_evaluate(tiny_config(cache_dir, **{}), tmp_path / "single")
  config_single = json.loads((tmp_path / "single" / "config.json").read_text())
  assert config_single["train"]["fsdp"] is False
  assert_same_run(out["train_and_evaluate"]["splits"], single["splits"])
  losses = lambda d: [r["loss"] for r in train_records(d) if r["split"] == "train"]
  np.testing.assert_allclose(losses(tmp_path / "fsdp"), losses(tmp_path / "single"), rtol=1e-4)


def free_slurm_port() -> int:
  """A free port in the range JAX derives from a SLURM job id, [61440, 65535]."""
  for port in np.random.default_rng().permutation(np.arange(65535 - 2**12 + 1, 65536)):
    with socket.socket() as s:
      try:
        s.bind(("localhost", int(port)))
      except OSError:
        continue
      return int(port)
  raise RuntimeError("no free port in [61440, 65535]")


def slurm_step_env(process: int, port: int) -> dict:
  """What `srun --ntasks=2` on one node gives task `process` (JAX's SLURM detection reads these;
  the coordinator port is derived from the job id)."""
  job_id = port - (65535 - 2**12 + 1)
  return dict(subprocess_env(), SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
              SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID=str(process),
              SLURM_LOCALID=str(process), SLURM_STEP_NUM_NODES="1")


def test_two_processes_under_jax_distributed_match_one_process(tmp_path, cache_dir):
  """train.py launched as 2 processes of a (simulated) SLURM step: JAX's SLURM detection starts
  jax.distributed with a localhost coordinator, one CPU device each, each process reading its
  half of every batch and writing its part of one collective checkpoint. The run ends with one
  process's results; only process 0 writes metrics and results.json."""
  common = [sys.executable, "train.py", "--config=configs/transformer_listops.py:tiny",
            f"--config.cache_dir={cache_dir}",
            *(f"--config.model.{k}={v}" for k, v in SIZES.items())]
  single = subprocess.run([*common, f"--workdir={tmp_path / 'one'}"], cwd=ROOT,
                          env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert single.returncode == 0, single.stderr[-3000:]
  port = free_slurm_port()
  procs = [subprocess.Popen([*common, f"--workdir={tmp_path / 'two'}"], cwd=ROOT,
                            env=slurm_step_env(i, port), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=900) for p in procs]
  for proc, (_, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
  assert "test accuracy" in outputs[0][0] and "test accuracy" not in outputs[1][0]
  one = json.loads((tmp_path / "one" / "results.json").read_text())
  two = json.loads((tmp_path / "two" / "results.json").read_text())
  assert (one["processes"], two["processes"]) == (1, 2) and len(two["devices"]) == 2
  assert_same_run(two["splits"], one["splits"])
  losses = lambda d: [r["loss"] for r in train_records(d) if r["split"] == "train"]
  np.testing.assert_allclose(losses(tmp_path / "two"), losses(tmp_path / "one"), rtol=1e-4)
  # one checkpoint written collectively, with each process's input-pipeline state
  inputs = sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "12" / "input").iterdir()
                  if p.suffix == ".json")
  assert inputs == ["process_0-of-2.json", "process_1-of-2.json"]


def test_gradient_accumulation_of_four_micro_batches_is_one_step_on_the_whole_batch(cache_dir):
  config = tiny_config(cache_dir, dropout_rate=0.0, attention_dropout_rate=0.0)
  task = train.load_task(config)
  model = train.model_for(config, task)
  init = train.state_initializer(config, task, model)
  batches = pipeline.train_input(task.splits["train"], 16, config.seed)
  inputs = [next(batches) for _ in range(3)]
  curves, params = {}, {}
  for accum in (1, 4):
    steps = train.Steps(jax.eval_shape(init), 16, accum_steps=accum)
    state, losses = steps.init_state(init), []
    for batch in inputs:
      state, metrics = steps.train(state, steps.put_batch(batch), jax.random.key(0))
      losses.append(float(metrics["loss"]))
    curves[accum], params[accum] = losses, jax.device_get(state.params)
  np.testing.assert_allclose(curves[4], curves[1], rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(params[4]), jax.tree_util.tree_leaves(params[1])):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert curves[1][0] != curves[1][-1]


def test_micro_batches_take_every_kth_row():
  batch = {"inputs": np.arange(8 * 3).reshape(8, 3)}
  micro = train.micro_batches(batch, 4)["inputs"]
  assert micro.shape == (4, 2, 3)
  np.testing.assert_array_equal(micro[1], batch["inputs"][[1, 5]])


def test_fsdp_shards_the_largest_divisible_axis_and_replicates_small_arrays():
  assert parallel.fsdp_spec((64, 128), 4) == PartitionSpec(None, "data")
  assert parallel.fsdp_spec((128, 64), 4) == PartitionSpec("data")
  assert parallel.fsdp_spec((8, 1000), 4) == PartitionSpec(None, "data")  # both divide: largest
  assert parallel.fsdp_spec((1001, 3), 4) == PartitionSpec()  # nothing divides
  assert parallel.fsdp_spec((16,), 4) == PartitionSpec()  # small: replicated
  assert parallel.fsdp_spec((64, 128), 1) == PartitionSpec()


def test_distributed_flags_go_together():
  with pytest.raises(ValueError, match="--coordinator, --num_processes and --process_id go "
                                       "together"):
    parallel.initialize_distributed("localhost:1234", 2, -1)
  with pytest.raises(ValueError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
    parallel.initialize_distributed("localhost:1234", 2, 2)
  assert parallel.initialize_distributed() is False  # one process: nothing started


def test_accumulation_walks_batch_norm_bfloat16_dropout_remat_and_fsdp(cache_dir):
  """The options together, not only at their defaults: 2 micro-batches through the scan carry
  BatchNorm's statistics, in bfloat16 with dropout, remat'd blocks, FSDP shardings. Two steps
  train: finite losses, parameters and running averages move, parameters stay float32."""
  config = tiny_config(cache_dir, norm="batch", dtype="bfloat16", remat=True, dropout_rate=0.2,
                       attention_dropout_rate=0.2)
  task = train.load_task(config)
  init = train.state_initializer(config, task, train.model_for(config, task))
  steps = train.Steps(jax.eval_shape(init), 16, accum_steps=2, fsdp=True)
  state = steps.init_state(init)
  before = jax.device_get((state.params, state.batch_stats))
  batches = pipeline.train_input(task.splits["train"], 16, config.seed)
  for _ in range(2):
    state, metrics = steps.train(state, steps.put_batch(next(batches)), jax.random.key(0))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["nonfinite"]) == 0.0
  params, stats = jax.device_get((state.params, state.batch_stats))
  assert {x.dtype for x in jax.tree_util.tree_leaves(params)} == {np.dtype("float32")}
  for old, new in ((before[0], params), (before[1], stats)):
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree_util.tree_leaves(old),
                                                   jax.tree_util.tree_leaves(new))]
    assert all(moved), f"{moved.count(False)} of {len(moved)} arrays never changed"
