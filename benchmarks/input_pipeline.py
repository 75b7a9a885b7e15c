"""Input pipeline throughput vs. train step time, at each LRA task's full shapes.

    python benchmarks/input_pipeline.py [--tasks=listops,text,retrieval,image,pathfinder,pathx]
                                        [--workers=0,2] [--steps=50] [--out=docs/...json]

For each task: the FULL config's batch size and length (`configs/transformer_<task>.py`, no
preset: config.train.batch_size, config.data.max_length; retrieval carries `inputs2`), a Split
of random tokens of exactly that shape (uint8, as the task modules store them; the real data is
not needed: the pipeline's cost depends on shapes, not content), then

  * batches/s through `lra.pipeline.train_input` after a warm-up, per worker count;
  * for comparison, the compiled `train.Steps(...).train` step of the full Transformer
    config on that task (`step_time`, in a child process killed after --step_timeout seconds):
    one step at batch B/16 extrapolated to B; where that is under 60 s, the mean of 3 steps
    at B (or at B/2**k, scaled, where XLA plans more than half the available memory for B).
    A task whose step is over 60 s is reported as skipped, with the extrapolated time.

Prints a table and writes JSON (default docs/input_pipeline_cpu.json).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # pylint: disable=wrong-import-position

from lra import pipeline  # pylint: disable=wrong-import-position
from lra.batches import Split, TaskData  # pylint: disable=wrong-import-position

TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")
VOCAB = {"listops": ("lra.listops", lambda m: len(m.VOCAB)), "text": ("lra.text", None),
         "retrieval": ("lra.retrieval", None), "image": ("lra.image", None),
         "pathfinder": ("lra.pathfinder", None), "pathx": ("lra.pathfinder", None)}
STEP_LIMIT_S = 60.0  # a step slower than this is not timed at the full batch
ROWS_PER_BATCH = 8  # the random split holds 8 global batches (an epoch of 8 steps)


def task_shapes(task: str) -> dict:
  config = importlib.import_module(f"configs.transformer_{task}").get_config()
  module_name, vocab_of = VOCAB[task]
  module = importlib.import_module(module_name)
  vocab = vocab_of(module) if vocab_of else module.VOCAB_SIZE
  return {"config": config, "batch_size": int(config.train.batch_size),
          "length": int(config.data.max_length), "pair": task == "retrieval",
          "vocab_size": int(vocab), "num_classes": int(module.NUM_CLASSES)}


def random_split(shapes: dict, seed: int = 0) -> Split:
  rng = np.random.default_rng(seed)
  n, length = ROWS_PER_BATCH * shapes["batch_size"], shapes["length"]
  high = min(shapes["vocab_size"], 256)
  tokens = lambda: rng.integers(1, high, (n, length), dtype=np.uint8)
  lengths = lambda: rng.integers(length // 2, length + 1, n)
  extra = {"inputs2": tokens(), "lengths2": lengths()} if shapes["pair"] else {}
  return Split("train", tokens(), lengths(), rng.integers(0, shapes["num_classes"], n),
               source="random tokens (benchmark)", **extra)


def pipeline_rate(split: Split, batch_size: int, workers: int, steps: int,
                  warmup: int = 5) -> dict:
  started = time.perf_counter()
  it = pipeline.train_input(split, batch_size, seed=0, workers=workers)
  try:
    for _ in range(warmup):
      next(it)
    first = time.perf_counter() - started
    start = time.perf_counter()
    for _ in range(steps):
      batch = next(it)
    seconds = time.perf_counter() - start
  finally:
    it.close()
  nbytes = sum(v.nbytes for v in batch.values())
  return {"workers": workers, "batches_per_s": steps / seconds, "steps": steps,
          "startup_and_warmup_s": first, "batch_bytes": int(nbytes),
          "mb_per_s": nbytes * steps / seconds / 2 ** 20}


def memory_limit_bytes() -> int:
  """Half of the memory available now (the machine is shared; a step must not crowd it)."""
  for line in Path("/proc/meminfo").read_text().splitlines():
    if line.startswith("MemAvailable:"):
      return int(line.split()[1]) * 1024 // 2
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def step_time(task: str) -> dict:
  """The full Transformer config's compiled train step on `task` (run in a child process).

  First at a small batch b = B/16 (one step after compilation), extrapolated linearly to the
  full batch B (a step's cost is linear in the batch). Where that is under the 60 s limit, the
  full batch (or B/2**k where XLA plans more than half the available memory for B, then
  scaled by 2**k) is timed: the mean of 3 steps after compilation (1 if a step takes > 20 s)."""
  import jax  # pylint: disable=import-outside-toplevel
  import train  # pylint: disable=import-outside-toplevel
  shapes = task_shapes(task)
  split = random_split(shapes)
  config, batch_size = shapes["config"], shapes["batch_size"]
  data = TaskData(task, {"train": split, "validation": split, "test": split},
                  vocab_size=shapes["vocab_size"], num_classes=shapes["num_classes"],
                  max_length=shapes["length"], pair=shapes["pair"])
  model = train.model_for(config, data)
  state = train.create_state(config, data, model)
  steps = train.Steps(state, batch_size)
  state = steps.put_state(state)
  root = jax.random.key(0)
  limit = memory_limit_bytes()
  out = {"memory_limit_bytes": limit, "runs": []}

  def run(batch_rows: int, repeats: int) -> dict:
    nonlocal state
    batch = steps.put_batch(split.batch(np.arange(batch_rows)))
    start = time.perf_counter()
    compiled = steps.train.lower(state, batch, root).compile()
    record = {"batch": batch_rows, "compile_s": time.perf_counter() - start,
              "planned_memory_bytes": train.compiled_memory_bytes(compiled), "step_times_s": []}
    out["runs"].append(record)
    memory = record["planned_memory_bytes"]
    if memory is not None and memory > limit:
      return record
    for _ in range(repeats):
      start = time.perf_counter()
      state, metrics = compiled(state, batch, root)
      jax.block_until_ready(metrics)
      record["step_times_s"].append(time.perf_counter() - start)
      record["full_batch_s"] = float(np.mean(record["step_times_s"])) * batch_size / batch_rows
      print(f"STEP {json.dumps(record)}", flush=True)  # what a timed-out parent still reads
      if record["step_times_s"][-1] > STEP_LIMIT_S / 3:
        break
    return record

  small = run(max(1, batch_size // 16), 1)
  if not small["step_times_s"]:
    out["skipped"] = (f"planned memory {small['planned_memory_bytes'] / 2 ** 30:.1f} GiB at "
                      f"batch {small['batch']} > {limit / 2 ** 30:.1f} GiB")
    return out
  out["extrapolated_s"] = small["full_batch_s"]
  if small["full_batch_s"] > STEP_LIMIT_S:
    out["skipped"] = (f"~{small['full_batch_s']:.0f} s per step, extrapolated from one step at "
                      f"batch {small['batch']} ({small['step_times_s'][0]:.1f} s)")
    return out
  rows = batch_size
  while rows > small["batch"]:
    record = run(rows, 3)
    if record["step_times_s"]:
      break
    rows //= 2
  best = out["runs"][-1]
  out.update(step_s=best["full_batch_s"], measured_batch=best["batch"])
  return out


def step_time_bounded(task: str, timeout_s: float) -> dict:
  """`step_time(task)` in a child process killed after `timeout_s` (an XLA step cannot be
  interrupted in-process); the steps it timed before are still reported."""
  command = [sys.executable, __file__, f"--step_worker={task}"]
  try:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    stdout, timed_out = done.stdout, False
  except subprocess.TimeoutExpired as error:
    stdout, timed_out = error.stdout or "", True
    stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
  for line in stdout.splitlines()[::-1]:
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  runs = [json.loads(line[len("STEP "):]) for line in stdout.splitlines()
          if line.startswith("STEP ")]
  if timed_out:
    out = {"timed_out_s": timeout_s, "runs": runs[-1:]}
    if runs:
      last = runs[-1]
      out["skipped"] = (f"stopped after {timeout_s:.0f} s; one step at batch {last['batch']} "
                        f"took {last['step_times_s'][-1]:.1f} s (~{last['full_batch_s']:.0f} s "
                        "at the full batch)")
    else:
      out["skipped"] = (f"stopped after {timeout_s:.0f} s: compilation and one step at batch "
                        "B/16 did not finish (> 60 s per full step)")
    return out
  raise RuntimeError(f"step worker for {task} failed:\n{done.stderr[-3000:]}")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--tasks", default=",".join(TASKS))
  parser.add_argument("--workers", default="0,2")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--no_step", action="store_true", help="skip the train step timing")
  parser.add_argument("--step_timeout", type=float, default=80.0,
                      help="seconds for one task's step measurement (compilations included)")
  parser.add_argument("--step_worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--out", default=str(ROOT / "docs" / "input_pipeline_cpu.json"))
  args = parser.parse_args(argv)
  if args.step_worker:
    print("RESULT " + json.dumps(step_time(args.step_worker)), flush=True)
    return
  tasks = [t for t in args.tasks.split(",") if t]
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown:
    parser.error(f"unknown tasks {unknown}; known: {','.join(TASKS)}")
  workers = [int(w) for w in args.workers.split(",") if w]
  started = time.time()
  print("Random uint8 tokens of each task's full shapes: the pipeline's cost depends on the "
        "shapes (rows gathered, int32 conversion, masks), not on the content.", flush=True)
  results = []
  for task in tasks:
    shapes = task_shapes(task)
    split = random_split(shapes)
    row = {"task": task, "batch_size": shapes["batch_size"], "length": shapes["length"],
           "pair": shapes["pair"], "split_rows": len(split), "pipeline": []}
    for w in workers:
      row["pipeline"].append(pipeline_rate(split, shapes["batch_size"], w, args.steps))
      print(f"{task}: workers={w}: {row['pipeline'][-1]['batches_per_s']:.1f} batches/s",
            flush=True)
    results.append(row)
  if not args.no_step:
    for row in results:
      row["train_step"] = step = step_time_bounded(row["task"], args.step_timeout)
      print(f"{row['task']}: train step: " + (
          step.get("skipped") or f"{step['step_s']:.2f} s (batch {step['measured_batch']})"),
            flush=True)
  table = format_table(results, workers)
  print(table)
  import jax  # pylint: disable=import-outside-toplevel
  Path(args.out).parent.mkdir(parents=True, exist_ok=True)
  Path(args.out).write_text(json.dumps({
      "note": "random tokens of each task's full shapes (pipeline cost depends on shapes, not "
              "content); CPU timings on a machine shared with other jobs",
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "jax_devices": [str(d) for d in jax.devices()],
                  "load_average": os.getloadavg()},
      "steps": args.steps, "wall_s": time.time() - started, "results": results,
      "table": table}, indent=2) + "\n")
  print(f"wrote {args.out} ({time.time() - started:.0f} s)")


def format_table(results: list[dict], workers: list[int]) -> str:
  header = (["task", "batch x length"] + [f"batches/s (workers={w})" for w in workers]
            + ["train steps/s (full Transformer)", "bottleneck"])
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in results:
    rates = [p["batches_per_s"] for p in row["pipeline"]]
    step = row.get("train_step")
    if step is None:
      step_cell, bottleneck = "not measured", "?"
    elif "step_s" in step:
      scaled = step["measured_batch"] != row["batch_size"]
      step_cell = (f"{1 / step['step_s']:.3g} ({step['step_s']:.1f} s/step"
                   + (f", batch {step['measured_batch']} scaled)" if scaled else ")"))
      bottleneck = "train step" if max(rates) > 1 / step["step_s"] else "input pipeline"
    else:
      step_cell, bottleneck = f"< {1 / STEP_LIMIT_S:.3g}: {step['skipped']}", "train step"
    shape = f"{row['batch_size']} x {row['length']}" + (" x 2 (pair)" if row["pair"] else "")
    lines.append("| " + " | ".join([row["task"], shape] + [f"{r:.0f}" for r in rates]
                                     + [step_cell, bottleneck]) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
