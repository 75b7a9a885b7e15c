"""Efficiency benchmark in the format of LRA Table 2: train-step time and memory per length.

    python -m lra.benchmark --attention=all --lengths=1024,2048,4096,8192 --batch=2 \
        --out=bench.json [--markdown=bench.md] [--plot=bench.png]

Each (variant, length) is measured in its own subprocess, so a crash or out-of-memory is
recorded for that row and the benchmark goes on, and the process's peak RSS belongs to that
row alone. Measured: the compile time; the median train-step time (forward + backward + Adam
update) over repeats after compilation; XLA's compiled memory analysis (deterministic,
machine-independent) and the peak RSS. Ratios are to `transformer` at the same length.
Sizes default to the LRA Text model (embedding 256, 4 heads, MLP 1024, qkv 256).
`--block=attention` times the attention layer alone; `--model=full` the whole Text model
(4 layers, byte vocabulary, classifier head).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("attention", "all", "Comma-separated registered names, or 'all'.")
flags.DEFINE_string("lengths", "1024,2048,4096,8192", "Comma-separated sequence lengths.")
flags.DEFINE_integer("batch", 2, "Batch size.")
flags.DEFINE_integer("emb_dim", 256, "Embedding width.")
flags.DEFINE_integer("num_heads", 4, "Attention heads.")
flags.DEFINE_integer("qkv_dim", 256, "Total q/k/v width.")
flags.DEFINE_integer("mlp_dim", 1024, "Feed-forward width.")
flags.DEFINE_integer("num_layers", 4, "Layers (with --model=full).")
flags.DEFINE_enum("block", "encoder", ["encoder", "attention"],
                  "What to time: one encoder block, or the attention layer alone.")
flags.DEFINE_enum("model", "block", ["block", "full"], "'full' times the whole Text model.")
flags.DEFINE_string("attention_kwargs", "{}",
                    "JSON: {name: {kwarg: value}} overriding a variant's defaults.")
flags.DEFINE_integer("repeats", 5, "Timed train steps after compilation (median reported).")
flags.DEFINE_integer("timeout", 1800, "Seconds allowed per (variant, length).")
flags.DEFINE_string("out", "bench.json", "JSON output (one object per variant and length).")
flags.DEFINE_string("markdown", "", "Optional Markdown table output path ('-' = stdout).")
flags.DEFINE_string("plot", "", "Optional PNG: log-log time and memory against length.")
flags.DEFINE_string("worker", "", "Internal: JSON spec of one measurement.")

ROW_KEYS = ("attention", "length", "batch", "status", "step_time_s", "compile_time_s",
            "memory_bytes", "peak_rss_bytes", "speedup_vs_transformer", "memory_vs_transformer")


def _module_and_batch(spec: dict):
  """Builds what is timed, its params and one batch (numpy) for `spec`."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel

  from configs import defaults  # pylint: disable=import-outside-toplevel
  from models import build_model  # pylint: disable=import-outside-toplevel
  from models.attention.base import MultiHeadAttention  # pylint: disable=import-outside-toplevel
  from models.blocks import EncoderBlock  # pylint: disable=import-outside-toplevel

  b, length, name, kwargs = spec["batch"], spec["length"], spec["attention"], spec["kwargs"]
  key = jax.random.key(0)
  mask = jnp.ones((b, length), bool)
  if spec["model"] == "full":
    cfg = defaults.shared_config().model
    cfg.attention = name
    cfg.attention_kwargs = ml_collections.ConfigDict(kwargs)
    cfg.emb_dim, cfg.num_heads, cfg.qkv_dim = spec["emb_dim"], spec["num_heads"], spec["qkv_dim"]
    cfg.mlp_dim, cfg.num_layers = spec["mlp_dim"], spec["num_layers"]
    module = build_model(cfg, vocab_size=257, num_classes=2, max_len=length)
    batch = {"inputs": jnp.ones((b, length), jnp.int32), "mask": mask,
             "targets": jnp.zeros((b,), jnp.int32)}
    apply = lambda p, batch, rng: module.apply(p, batch, deterministic=False,
                                               rngs={"dropout": rng})[0]
    params = jax.jit(lambda k: module.init(k, batch))(key)
    return apply, params, batch
  x = jax.random.normal(key, (b, length, spec["emb_dim"]))
  if spec["block"] == "attention":
    module = MultiHeadAttention(num_heads=spec["num_heads"], qkv_dim=spec["qkv_dim"],
                                attention=name, attention_kwargs=kwargs, max_len=length)
  else:
    module = EncoderBlock(num_heads=spec["num_heads"], qkv_dim=spec["qkv_dim"],
                          mlp_dim=spec["mlp_dim"], attention=name, attention_kwargs=kwargs,
                          max_len=length)
  batch = {"x": x, "mask": mask}
  apply = lambda p, batch, rng: module.apply(p, batch["x"], batch["mask"], deterministic=False,
                                             rngs={"dropout": rng})
  params = jax.jit(lambda k: module.init(k, x, mask))(key)
  return apply, params, batch


def measure(spec: dict) -> dict:
  """One (variant, length): compile time, median step time, compiled memory, peak RSS."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from lra.run_log import peak_rss_bytes  # pylint: disable=import-outside-toplevel

  apply, params, batch = _module_and_batch(spec)
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.1)

  def loss_fn(params, batch, rng):
    out = apply(params, batch, rng)
    if "targets" in batch:
      return optax.softmax_cross_entropy_with_integer_labels(out, batch["targets"]).mean()
    return jnp.mean(out ** 2)

  def train_step(params, opt_state, batch, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = tx.init(params)
  rng = jax.random.key(1)
  started = time.perf_counter()
  compiled = jax.jit(train_step, donate_argnums=(0, 1)).lower(
      params, opt_state, batch, rng).compile()
  compile_time = time.perf_counter() - started
  stats = compiled.memory_analysis()
  memory = None
  if stats is not None:
    memory = int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
                 + stats.output_size_in_bytes - stats.alias_size_in_bytes)
  params, opt_state, loss = compiled(params, opt_state, batch, rng)  # warm-up
  jax.block_until_ready(loss)
  times = []
  for _ in range(spec["repeats"]):
    started = time.perf_counter()
    params, opt_state, loss = compiled(params, opt_state, batch, rng)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - started)
  return {"status": "ok", "step_time_s": statistics.median(times),
          "compile_time_s": compile_time, "memory_bytes": memory,
          "peak_rss_bytes": peak_rss_bytes(), "loss_finite": bool(jnp.isfinite(loss))}


def run_one(spec: dict, timeout: int) -> dict:
  """Runs `measure` in a subprocess; failures and time-outs become rows, not crashes."""
  row = {**dict.fromkeys(ROW_KEYS), "attention": spec["attention"], "length": spec["length"],
         "batch": spec["batch"], "block": spec["block"], "model": spec["model"],
         "kwargs": spec["kwargs"]}
  cmd = [sys.executable, "-m", "lra.benchmark", f"--worker={json.dumps(spec)}"]
  root = Path(__file__).resolve().parents[1]
  try:
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  except subprocess.TimeoutExpired:
    return {**row, "status": f"timeout after {timeout}s"}
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    tail = (done.stderr or "").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    oom = done.returncode in (-9, 137) or "RESOURCE_EXHAUSTED" in done.stderr
    return {**row, "status": ("out of memory: " if oom else "failed: ") + tail[0][:300]}
  return {**row, **json.loads(lines[-1])}


def add_ratios(rows: list[dict]) -> list[dict]:
  reference = {r["length"]: r for r in rows
               if r["attention"] == "transformer" and r["status"] == "ok"}
  for row in rows:
    ref = reference.get(row["length"])
    ok = row["status"] == "ok" and ref is not None
    row["speedup_vs_transformer"] = ref["step_time_s"] / row["step_time_s"] if ok else None
    row["memory_vs_transformer"] = (row["memory_bytes"] / ref["memory_bytes"]
                                    if ok and row.get("memory_bytes") and ref.get("memory_bytes")
                                    else None)
  return rows


def markdown(rows: list[dict]) -> str:
  """LRA Table 2 layout: steps/s and memory per length, ratios to the Transformer."""
  lengths = sorted({r["length"] for r in rows})
  names = sorted({r["attention"] for r in rows}, key=lambda n: (n != "transformer", n))
  by = {(r["attention"], r["length"]): r for r in rows}
  head = ["model"] + [f"steps/s @{n}" for n in lengths] + [f"memory MB @{n}" for n in lengths]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in names:
    cells = [name]
    for n in lengths:
      r = by.get((name, n), {"status": "missing"})
      cells.append(f"{1 / r['step_time_s']:.2f} ({r['speedup_vs_transformer']:.1f}x)"
                   if r["status"] == "ok" and r.get("speedup_vs_transformer")
                   else f"{1 / r['step_time_s']:.2f}" if r["status"] == "ok"
                   else r["status"].split(":")[0])
    for n in lengths:
      r = by.get((name, n), {"status": "missing"})
      cells.append(f"{r['memory_bytes'] / 2**20:.0f} ({r['memory_vs_transformer']:.2f}x)"
                   if r["status"] == "ok" and r.get("memory_vs_transformer")
                   else f"{r['memory_bytes'] / 2**20:.0f}" if r["status"] == "ok"
                   and r.get("memory_bytes") else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
  for name in sorted({r["attention"] for r in rows}):
    ok = sorted((r for r in rows if r["attention"] == name and r["status"] == "ok"),
                key=lambda r: r["length"])
    if not ok:
      continue
    lengths = [r["length"] for r in ok]
    style = dict(marker="o", label=name, linewidth=2.5 if name == "transformer" else 1.2)
    ax_t.loglog(lengths, [r["step_time_s"] for r in ok], **style)
    mem = [(r["length"], r["memory_bytes"] / 2**20) for r in ok if r.get("memory_bytes")]
    if mem:
      ax_m.loglog(*zip(*mem), **style)
  ax_t.set(xlabel="sequence length", ylabel="train step time (s)", title="Time per train step")
  ax_m.set(xlabel="sequence length", ylabel="XLA compiled memory (MiB)", title="Memory")
  for ax in (ax_t, ax_m):
    ax.grid(True, which="both", alpha=0.3)
  ax_m.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv):
  del argv
  if FLAGS.worker:
    try:
      result = measure(json.loads(FLAGS.worker))
    except Exception as e:  # pylint: disable=broad-except
      message = f"{type(e).__name__}: {e}".splitlines()[0][:300]
      oom = "RESOURCE_EXHAUSTED" in message or isinstance(e, MemoryError)
      result = {"status": ("out of memory: " if oom else "failed: ") + message}
    print(json.dumps(result), flush=True)
    return
  from models.attention import registry  # pylint: disable=import-outside-toplevel
  names = registry.names() if FLAGS.attention == "all" else FLAGS.attention.split(",")
  for name in names:
    registry.get(name)  # unknown names fail now, with the registered list
  if "transformer" not in names:
    names = ["transformer"] + names  # the reference for the ratios
  try:
    lengths = [int(n) for n in FLAGS.lengths.split(",")]
  except ValueError as e:
    raise app.UsageError(f"--lengths={FLAGS.lengths!r}: expected integers like 1024,2048") from e
  overrides = json.loads(FLAGS.attention_kwargs)
  rows = []
  for length in lengths:
    for name in names:
      spec = {"attention": name, "length": length, "batch": FLAGS.batch,
              "emb_dim": FLAGS.emb_dim, "num_heads": FLAGS.num_heads, "qkv_dim": FLAGS.qkv_dim,
              "mlp_dim": FLAGS.mlp_dim, "num_layers": FLAGS.num_layers, "block": FLAGS.block,
              "model": FLAGS.model, "kwargs": overrides.get(name, {}),
              "repeats": FLAGS.repeats}
      row = run_one(spec, FLAGS.timeout)
      rows.append(row)
      step = f"{row['step_time_s']:.4f}s" if row["status"] == "ok" else row["status"]
      print(f"{name:>20} @ {length:>6}: {step}", flush=True)
      Path(FLAGS.out).write_text(json.dumps(add_ratios(rows), indent=1))  # keep partial results
  rows = add_ratios(rows)
  Path(FLAGS.out).write_text(json.dumps(rows, indent=1))
  if FLAGS.markdown:
    table = markdown(rows)
    if FLAGS.markdown == "-":
      print(table)
    else:
      Path(FLAGS.markdown).write_text(table)
  if FLAGS.plot:
    plot(rows, FLAGS.plot)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
