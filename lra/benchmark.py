"""Efficiency benchmark in the format of LRA Table 2: train-step time and memory per length.

    python -m lra.benchmark --attention=all --lengths=1024,2048,4096,8192 --batch=2 \
        --out=bench.json [--markdown=bench.md] [--plot=bench.png]

Each (variant, length) is measured in its own subprocess, so a crash or out-of-memory is
recorded for that row and the benchmark goes on, and the process's peak RSS belongs to that
row alone. Measured: the compile time; the median train-step time (forward + backward + Adam
update) over repeats after compilation; XLA's compiled memory analysis (deterministic,
machine-independent), the peak RSS, and the FLOPs of one train step from XLA's cost analysis
of the compiled step (with the achieved GFLOP/s). Ratios are to `transformer` at the same length
(LRA's ratio, against the dense implementation, LRA's baseline: a `transformer` row without an
implementation is measured dense, though "auto" is the module's default), and to the fastest
exact attention on this machine at that length: `transformer` is also measured under each
`--exact` implementation (dense, blocked, xla, auto), and the least step time among them is the
reference.
Sizes default to the LRA Text model (embedding 256, 4 heads, MLP 1024, qkv 256).
`--block=attention` times the attention layer alone; `--model=full` the whole Text model
(4 layers, byte vocabulary, classifier head).
"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from lra import benchmark_decode

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined when run as a program, so that importing this module
  (tests, lra.report) defines none."""
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
  flags.DEFINE_string("exact", "dense,blocked,xla",
                      "Comma-separated `transformer` implementations also measured, for the "
                      "speed-up against the fastest exact attention ('' = none).")
  flags.DEFINE_enum("mode", "train", ["train", "decode"],
                    "'train': train-step time and memory (LRA Table 2); 'decode': tokens/s and "
                    "cache memory of generating --lengths tokens with each causal variant's "
                    "decoder LM (lra/benchmark_decode.py; --num_layers blocks).")
  flags.DEFINE_string("worker", "", "Internal: JSON spec of one measurement.")



ROW_KEYS = ("attention", "length", "batch", "status", "step_time_s", "compile_time_s",
            "memory_bytes", "peak_rss_bytes", "speedup_vs_transformer", "memory_vs_transformer",
            "implementation", "attention_dropout_rate", "flops", "flops_while_loops",
            "gflops_per_s", "speedup_vs_fastest_exact", "fastest_exact_implementation",
            "user_s_per_step", "sys_s_per_step", "page_faults_per_step")
SYS_MARK = "§"  # the Markdown table's mark: system CPU time above a quarter of the step time


def kernel_bound(row: dict) -> bool:
  """True when the row's system CPU time per step exceeds a quarter of its step time."""
  return (row.get("status") == "ok" and row.get("sys_s_per_step") is not None
          and row["sys_s_per_step"] > row["step_time_s"] / 4)
# LRA's baseline: the `transformer` implementation of a row or run that names none. Rows recorded
# before "auto" became SoftmaxAttention's default measured "dense" that way; new measurements of
# `transformer` without an implementation are run dense explicitly (`_module_and_batch`), so a
# row's name stays what it measured and LRA's ratios stay against dense. "auto" rows are named
# `transformer (auto)`.
DEFAULT_IMPLEMENTATION = "dense"


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
  if name == "transformer":  # the implementation its row is named by (see implementation_of)
    kwargs = {**kwargs, "implementation": implementation_of(spec)}
  key = jax.random.key(0)
  mask = jnp.ones((b, length), bool)
  if spec["model"] == "full":
    cfg = defaults.shared_config().model
    cfg.attention = name
    cfg.attention_kwargs = ml_collections.ConfigDict(kwargs)
    cfg.emb_dim, cfg.num_heads, cfg.qkv_dim = spec["emb_dim"], spec["num_heads"], spec["qkv_dim"]
    cfg.mlp_dim, cfg.num_layers = spec["mlp_dim"], spec["num_layers"]
    if spec.get("attention_dropout_rate") is not None:
      cfg.attention_dropout_rate = spec["attention_dropout_rate"]
    module = build_model(cfg, vocab_size=257, num_classes=2, max_len=length)
    batch = {"inputs": jnp.ones((b, length), jnp.int32), "mask": mask,
             "targets": jnp.zeros((b,), jnp.int32)}
    apply = lambda p, batch, rng: (module.apply(p, batch, deterministic=False,
                                                rngs={"dropout": rng})[0], {})
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
  variables = jax.jit(lambda k: module.init(k, x, mask))(key)
  # State that training updates besides the parameters (Routing's EMA centroids in
  # batch_stats) is updated in the timed step too; the step returns it, so it is not dead code.
  state = {name: value for name, value in variables.items() if name != "params"}

  def apply(p, batch, rng):
    if not state:
      return module.apply(p, batch["x"], batch["mask"], deterministic=False,
                          rngs={"dropout": rng}), {}
    return module.apply({**p, **state}, batch["x"], batch["mask"], deterministic=False,
                        rngs={"dropout": rng}, mutable=sorted(state))

  return apply, {"params": variables["params"]}, batch


def measure(spec: dict) -> dict:
  """One (variant, length): compile time, median step time, compiled memory, peak RSS."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel

  from lra.run_log import peak_rss_bytes  # pylint: disable=import-outside-toplevel

  apply, params, batch = _module_and_batch(spec)
  tx = optax.adamw(1e-4, b1=0.9, b2=0.98, eps=1e-9, weight_decay=0.1)

  def loss_fn(params, batch, rng):
    out, state = apply(params, batch, rng)
    if "targets" in batch:
      loss = optax.softmax_cross_entropy_with_integer_labels(out, batch["targets"]).mean()
      return loss, state
    # A mixer carrying a memory sequence (Luna) gives (y, next_memory): both enter the loss.
    return sum(jnp.mean(o ** 2) for o in (out if isinstance(out, tuple) else (out,))), state

  def train_step(params, opt_state, batch, rng):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, state

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
  from lra import malloc  # pylint: disable=import-outside-toplevel
  malloc.limit_to_step(memory)  # a step above the limit gives its large chunks back to mmap
  flops, while_loops = compiled_flops(compiled)
  params, opt_state, loss, _ = compiled(params, opt_state, batch, rng)  # warm-up
  jax.block_until_ready(loss)
  times = []
  before = resource.getrusage(resource.RUSAGE_SELF)
  for _ in range(spec["repeats"]):
    started = time.perf_counter()
    params, opt_state, loss, _ = compiled(params, opt_state, batch, rng)
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - started)
  after = resource.getrusage(resource.RUSAGE_SELF)
  step_time = statistics.median(times)
  return {"status": "ok", "step_time_s": step_time,
          "compile_time_s": compile_time, "memory_bytes": memory,
          "peak_rss_bytes": peak_rss_bytes(), "loss_finite": bool(jnp.isfinite(loss)),
          "flops": flops, "flops_while_loops": while_loops,
          "gflops_per_s": flops / step_time / 1e9 if flops else None,
          **cpu_per_step(before, after, spec["repeats"])}


def cpu_per_step(before, after, steps: int) -> dict:
  """User and system CPU seconds (all threads) and page faults per timed step, from
  getrusage deltas: a ratio driven by the kernel (zeroing fresh pages) shows here."""
  faults = lambda r: r.ru_minflt + r.ru_majflt
  return {"user_s_per_step": (after.ru_utime - before.ru_utime) / steps,
          "sys_s_per_step": (after.ru_stime - before.ru_stime) / steps,
          "page_faults_per_step": (faults(after) - faults(before)) / steps}


def compiled_flops(compiled) -> tuple[float | None, int | None]:
  """FLOPs of one call from XLA's cost analysis, and the number of while loops in the HLO.

  `cost_analysis()` is a dict in recent JAX and a list of dicts (one per executable) in older
  versions; None where the backend offers none. XLA's HloCostAnalysis counts a while loop's
  body once, not once per trip, so where the step has loops (`lax.scan`/`lax.map`, e.g. the
  blocked softmax, causal Performer, Reformer chunks) the count is a lower bound: the second
  value says how many loops there are (0 = the count is complete)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  some backends do not implement it
    return None, None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = cost.get("flops") if isinstance(cost, dict) else None
  if flops is None or flops <= 0:
    return None, None
  try:
    loops = len(re.findall(r"\bwhile\(", compiled.as_text()))
  except Exception:  # pylint: disable=broad-except
    loops = None
  return float(flops), loops


def run_one(spec: dict, timeout: int) -> dict:
  """Runs `measure` in a subprocess; failures and time-outs become rows, not crashes."""
  row = {**dict.fromkeys(ROW_KEYS), "attention": spec["attention"], "length": spec["length"],
         "batch": spec["batch"], "block": spec["block"], "model": spec["model"],
         "kwargs": spec["kwargs"], "implementation": implementation_of(spec),
         "attention_dropout_rate": spec.get("attention_dropout_rate"),
         "exact_only": bool(spec.get("exact_only"))}
  return {**row, **run_worker(spec, timeout)}


def run_worker(spec: dict, timeout: int) -> dict:
  """`spec` measured in a subprocess (`--worker`) -> its result, or {"status": why not}."""
  cmd = [sys.executable, "-m", "lra.benchmark", f"--worker={json.dumps(spec)}"]
  root = Path(__file__).resolve().parents[1]
  try:
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  except subprocess.TimeoutExpired:
    return {"status": f"timeout after {timeout}s"}
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if done.returncode != 0 or not lines:
    return {"status": failure_status(done.returncode, done.stderr or "")}
  return json.loads(lines[-1])


def failure_status(returncode: int, stderr: str) -> str:
  """"out of memory: ..." or "failed: ..." with the reason: the signal that killed the worker,
  else the last stderr line that is not an absl INFO/WARNING log line."""
  if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
    return ("out of memory: worker killed by SIGKILL (the kernel's out-of-memory killer sends "
            "it)")
  if returncode < 0:
    return f"failed: worker killed by {signal.Signals(-returncode).name}"
  lines = [line for line in stderr.strip().splitlines()
           if line.strip() and not re.match(r"[IW]\d{4} ", line)]
  tail = lines[-1] if lines else f"exit {returncode}"
  oom = "RESOURCE_EXHAUSTED" in stderr or "MemoryError" in stderr
  return ("out of memory: " if oom else "failed: ") + tail[:300]


def implementation_of(row: dict) -> str | None:
  """The `transformer` implementation a row (or spec) measured; None for other variants."""
  if row["attention"] != "transformer":
    return None
  return row.get("implementation") or (row.get("kwargs") or {}).get(
      "implementation", DEFAULT_IMPLEMENTATION)


def label(row: dict) -> str:
  """Row name in tables and plots: `transformer (blocked)`, `transformer (auto)`, ... for an
  implementation other than LRA's dense baseline."""
  impl = implementation_of(row)
  return row["attention"] if impl in (None, DEFAULT_IMPLEMENTATION) else f"transformer ({impl})"


def add_ratios(rows: list[dict]) -> list[dict]:
  """Adds, per row, LRA's ratios to the dense `transformer` at the same length
  (`speedup_vs_transformer`, `memory_vs_transformer`) and the speed-up against the fastest exact
  attention measured at that length (`transformer` under any implementation)."""
  reference, fastest = {}, {}
  for length in {r["length"] for r in rows}:
    exact = [r for r in rows if r["length"] == length and r["attention"] == "transformer"
             and r["status"] == "ok"]
    dense = [r for r in exact if implementation_of(r) == DEFAULT_IMPLEMENTATION]
    main = [r for r in exact if not r.get("exact_only")]  # the user's own transformer row
    if dense or main:
      reference[length] = (dense or main)[0]
    if exact:
      fastest[length] = min(exact, key=lambda r: r["step_time_s"])
  for row in rows:
    ok = row["status"] == "ok"
    ref, best = reference.get(row["length"]), fastest.get(row["length"])
    row["speedup_vs_transformer"] = ref["step_time_s"] / row["step_time_s"] if ok and ref else None
    row["memory_vs_transformer"] = (row["memory_bytes"] / ref["memory_bytes"]
                                    if ok and ref and row.get("memory_bytes")
                                    and ref.get("memory_bytes") else None)
    row["speedup_vs_fastest_exact"] = (best["step_time_s"] / row["step_time_s"]
                                       if ok and best else None)
    row["fastest_exact_implementation"] = implementation_of(best) if best else None
  return rows


def _fmt_flops(row: dict, value: float, spec: str) -> str:
  """A FLOP figure; `>=` where XLA counted loop bodies once (see `compiled_flops`)."""
  return (">=" if row.get("flops_while_loops") else "") + format(value, spec)


COLUMN_GROUPS = ("steps", "memory", "exact", "gflops", "cpu")


def markdown(rows: list[dict], columns: tuple[str, ...] = COLUMN_GROUPS) -> str:
  """LRA Table 2 layout: steps/s and memory per length, ratios to the Transformer; then the
  speed-up against the fastest exact attention at each length, the achieved GFLOP/s and the CPU
  time and page faults per step. `columns` picks groups of `COLUMN_GROUPS` (the README shows
  the table in parts)."""
  unknown = set(columns) - set(COLUMN_GROUPS)
  if unknown:
    raise ValueError(f"markdown columns {sorted(unknown)}; expected some of {COLUMN_GROUPS}")
  lengths = sorted({r["length"] for r in rows})
  names = sorted({label(r) for r in rows}, key=lambda n: (not n.startswith("transformer"), n))
  by = {(label(r), r["length"]): r for r in rows}
  fastest = {n: next((r["fastest_exact_implementation"] for r in rows if r["length"] == n
                      and r.get("fastest_exact_implementation")), None) for n in lengths}

  def steps(r):
    mark = SYS_MARK if kernel_bound(r) else ""
    if r["status"] != "ok":
      return r["status"].split(":")[0]
    if r.get("speedup_vs_transformer"):
      return f"{1 / r['step_time_s']:.2f}{mark} ({r['speedup_vs_transformer']:.1f}x)"
    return f"{1 / r['step_time_s']:.2f}{mark}"

  def memory(r):
    if r["status"] != "ok" or not r.get("memory_bytes"):
      return "-"
    if r.get("memory_vs_transformer"):
      return f"{r['memory_bytes'] / 2**20:.0f} ({r['memory_vs_transformer']:.2f}x)"
    return f"{r['memory_bytes'] / 2**20:.0f}"

  def exact(r):
    return f"{r['speedup_vs_fastest_exact']:.2f}x" if r.get("speedup_vs_fastest_exact") else "-"

  def gflops(r):
    return _fmt_flops(r, r["gflops_per_s"], ".1f") if r.get("gflops_per_s") else "-"

  def cpu(r):
    if r["status"] != "ok" or r.get("sys_s_per_step") is None:
      return "-"
    return (f"{r['user_s_per_step']:.3f} / {r['sys_s_per_step']:.3f} / "
            f"{r['page_faults_per_step'] / 1000:.0f}k")

  groups = {"steps": (lambda n: f"steps/s @{n}", steps),
            "memory": (lambda n: f"memory MiB @{n}", memory),
            "exact": (lambda n: f"vs fastest exact ({fastest[n] or '-'}) @{n}", exact),
            "gflops": (lambda n: f"GFLOP/s @{n}", gflops),
            "cpu": (lambda n: f"user s / sys s / faults per step @{n}", cpu)}
  chosen = [groups[c] for c in COLUMN_GROUPS if c in columns]
  head = ["model"] + [title(n) for title, _ in chosen for n in lengths]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name in names:
    cells = [name] + [cell(by.get((name, n), {"status": "missing"}))
                      for _, cell in chosen for n in lengths]
    lines.append("| " + " | ".join(cells) + " |")
  notes = []
  if "steps" in columns or "memory" in columns:
    notes.append("Ratios in brackets are to the dense `transformer` at the same length (LRA "
                 "Table 2); memory is XLA's compiled memory of the train step.")
  if "exact" in columns:
    notes.append("`vs fastest exact`: speed-up against the fastest exact attention measured at "
                 "that length (`transformer` under the implementation named in the header).")
  if "gflops" in columns:
    notes.append("GFLOP/s = XLA cost-analysis FLOPs per train step / step time; `>=` where the "
                 "step has while loops, whose bodies XLA counts once.")
  if "cpu" in columns or "steps" in columns:
    notes.append(f"CPU seconds (all threads) and page faults per step from getrusage; "
                 f"{SYS_MARK} after steps/s: system time above a quarter of the step time (the "
                 "kernel, e.g. zeroing fresh pages, drives that row's speed).")
  return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def plot(rows: list[dict], path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
  for name in sorted({label(r) for r in rows}):
    ok = sorted((r for r in rows if label(r) == name and r["status"] == "ok"),
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


def exact_implementations(text: str) -> list[str]:
  """--exact's implementations, checked against the transformer's list."""
  from models.attention import transformer  # pylint: disable=import-outside-toplevel
  IMPLEMENTATIONS = transformer.IMPLEMENTATIONS  # pylint: disable=invalid-name
  chosen = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [t for t in chosen if t not in IMPLEMENTATIONS]
  if unknown:
    raise app.UsageError(f"--exact={text!r}: unknown implementation(s) {unknown}; expected a "
                         f"comma-separated subset of {','.join(IMPLEMENTATIONS)} (or empty)")
  return list(dict.fromkeys(chosen))


def attention_dropout_rate(name: str, kwargs: dict, model: str) -> float:
  """The attention-weight dropout a row trains with. One block (--model=block/attention) is
  built with the modules' default, 0. The full Text model uses the shared config's LRA rate,
  except `transformer` with implementation 'xla': `jax.nn.dot_product_attention` has no
  attention dropout (SoftmaxAttention refuses it), so that row is measured without it, as are
  the variants that form no attention weights (performer, linear_transformer, nystromformer)."""
  if model != "full":
    return 0.0
  from configs import defaults  # pylint: disable=import-outside-toplevel
  if implementation_of({"attention": name, "kwargs": kwargs}) == "xla":
    return 0.0
  config = defaults.attention(defaults.shared_config(), name)  # 0 where the variant has none
  return float(config.model.attention_dropout_rate)


def main(argv):
  del argv
  if FLAGS.worker:
    from lra import malloc  # pylint: disable=import-outside-toplevel
    malloc.keep_freed_memory()  # before jax starts its threads: see lra/malloc.py
    try:
      spec = json.loads(FLAGS.worker)
      result = (benchmark_decode.measure_decode(spec) if spec.get("mode") == "decode"
                else measure(spec))
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
  if FLAGS.mode == "decode":
    _decode_main(names)
    return
  if "transformer" not in names:
    names = ["transformer"] + names  # the reference for the ratios
  try:
    lengths = [int(n) for n in FLAGS.lengths.split(",")]
  except ValueError as e:
    raise app.UsageError(f"--lengths={FLAGS.lengths!r}: expected integers like 1024,2048") from e
  overrides = json.loads(FLAGS.attention_kwargs)
  Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
  specs = [(name, overrides.get(name, {}), False) for name in names]
  for impl in exact_implementations(FLAGS.exact):
    kwargs = {**overrides.get("transformer", {}), "implementation": impl}
    if not any(n == "transformer" and implementation_of({"attention": n, "kwargs": k}) == impl
               for n, k, _ in specs):  # the transformer row already measures this one
      specs.append(("transformer", kwargs, True))
  rows = []
  for length in lengths:
    for name, kwargs, exact_only in specs:
      spec = {"attention": name, "length": length, "batch": FLAGS.batch,
              "emb_dim": FLAGS.emb_dim, "num_heads": FLAGS.num_heads, "qkv_dim": FLAGS.qkv_dim,
              "mlp_dim": FLAGS.mlp_dim, "num_layers": FLAGS.num_layers, "block": FLAGS.block,
              "model": FLAGS.model, "kwargs": kwargs, "repeats": FLAGS.repeats,
              "exact_only": exact_only,
              "attention_dropout_rate": attention_dropout_rate(name, kwargs, FLAGS.model)}
      row = run_one(spec, FLAGS.timeout)
      rows.append(row)
      step = f"{row['step_time_s']:.4f}s" if row["status"] == "ok" else row["status"]
      print(f"{label(row):>22} @ {length:>6}: {step}", flush=True)
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


def _lengths() -> list[int]:
  try:
    return [int(n) for n in FLAGS.lengths.split(",")]
  except ValueError as e:
    raise app.UsageError(f"--lengths={FLAGS.lengths!r}: expected integers like 1024,2048") from e


def _decode_main(names: list[str]) -> None:
  """--mode=decode: every causal variant among `names`, each length, one subprocess each."""
  overrides = json.loads(FLAGS.attention_kwargs)
  Path(FLAGS.out).parent.mkdir(parents=True, exist_ok=True)
  rows = []
  for name in benchmark_decode.causal_names(names):
    for length in _lengths():
      row = benchmark_decode.cannot_decode_row(name, length, FLAGS.batch)
      if row is None:
        spec = {"mode": "decode", "attention": name, "length": length, "batch": FLAGS.batch,
                "emb_dim": FLAGS.emb_dim, "num_heads": FLAGS.num_heads,
                "qkv_dim": FLAGS.qkv_dim, "mlp_dim": FLAGS.mlp_dim,
                "num_layers": FLAGS.num_layers, "kwargs": overrides.get(name, {}),
                "repeats": FLAGS.repeats}
        row = {"attention": name, "length": length, "batch": FLAGS.batch,
               "num_layers": FLAGS.num_layers, "kwargs": spec["kwargs"],
               **run_worker(spec, FLAGS.timeout)}
      rows.append(row)
      shown = (f"{row['tokens_per_s']:,.0f} tokens/s, cache {row['cache_bytes']:,} B"
               if row["status"] == "ok" else row["status"])
      print(f"{name:>22} @ {length:>6}: {shown}", flush=True)
      Path(FLAGS.out).write_text(json.dumps(rows, indent=1))  # keep partial results
  if FLAGS.markdown:
    table = benchmark_decode.markdown(rows)
    if FLAGS.markdown == "-":
      print(table)
    else:
      Path(FLAGS.markdown).write_text(table)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
