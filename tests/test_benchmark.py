"""The efficiency benchmark on tiny lengths: JSON schema, ratios, FLOPs, the exact-attention
references, failures recorded. No timing is asserted (these machines are noisy)."""
import json
import subprocess
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from lra import benchmark

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--batch=1", "--emb_dim=16", "--qkv_dim=16", "--num_heads=2", "--mlp_dim=32",
        "--repeats=1"]


def test_benchmark_writes_rows_tables_and_plot(tmp_path):
  out, md, png = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "bench.png"
  cmd = [sys.executable, "-m", "lra.benchmark", "--attention=transformer,local",
         "--lengths=64,128", *TINY, f"--out={out}", f"--markdown={md}", f"--plot={png}",
         '--attention_kwargs={"local": {"bogus_kwarg": 1}}']  # --exact: all three by default
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())
  assert sorted((r["attention"], r["implementation"], r["length"]) for r in rows) == sorted(
      [(a, i, n) for n in (64, 128) for a, i in
       [("transformer", "dense"), ("transformer", "blocked"), ("transformer", "xla"),
        ("local", None)]])
  for row in rows:
    for key in benchmark.ROW_KEYS:
      assert key in row, key
    assert row["attention_dropout_rate"] == 0.0  # one block: the modules' default
    if row["attention"] == "transformer":
      assert row["status"] == "ok"
      assert row["step_time_s"] > 0 and row["compile_time_s"] > 0
      assert row["memory_bytes"] > 0 and row["peak_rss_bytes"] > 0
      assert row["flops"] > 0 and row["flops_while_loops"] >= 0
      assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["step_time_s"] / 1e9)
      assert row["exact_only"] == (row["implementation"] != "dense")
      # CPU time of all threads per step (tick-granular: a tiny step may read 0) and faults
      assert row["user_s_per_step"] >= 0 and row["sys_s_per_step"] >= 0
      assert row["page_faults_per_step"] >= 0
    else:  # a variant that fails is recorded, and the benchmark goes on
      assert row["status"].startswith("failed") and "bogus_kwarg" in row["status"]
      assert row["speedup_vs_transformer"] is None and row["flops"] is None
      assert row["speedup_vs_fastest_exact"] is None
  for length in (64, 128):  # the ratios, recomputed here from the rows' own step times
    exact = {r["implementation"]: r for r in rows
             if r["length"] == length and r["attention"] == "transformer"}
    fastest = min(exact, key=lambda i: exact[i]["step_time_s"])
    for impl, row in exact.items():
      assert row["fastest_exact_implementation"] == fastest
      assert row["speedup_vs_fastest_exact"] == pytest.approx(
          exact[fastest]["step_time_s"] / row["step_time_s"])
      assert row["speedup_vs_transformer"] == pytest.approx(
          exact["dense"]["step_time_s"] / row["step_time_s"])
      assert row["memory_vs_transformer"] == pytest.approx(
          row["memory_bytes"] / exact["dense"]["memory_bytes"])
    assert exact[fastest]["speedup_vs_fastest_exact"] == 1.0
  text = md.read_text()
  assert "| transformer |" in text and "| transformer (blocked) |" in text
  assert "| transformer (xla) |" in text and "failed" in text
  assert "vs fastest exact" in text and "GFLOP/s @128" in text
  assert "user s / sys s / faults per step @128" in text
  assert png.stat().st_size > 1000


def test_cpu_per_step_is_the_getrusage_delta_per_step():
  usage = lambda user, system, minor, major: types.SimpleNamespace(
      ru_utime=user, ru_stime=system, ru_minflt=minor, ru_majflt=major)
  got = benchmark.cpu_per_step(usage(1.0, 0.5, 100, 1), usage(3.0, 1.5, 4100, 5), steps=4)
  assert got == {"user_s_per_step": 0.5, "sys_s_per_step": 0.25, "page_faults_per_step": 1001.0}


def test_rows_whose_system_time_exceeds_a_quarter_of_the_step_are_marked():
  row = lambda name, sys_s: {
      "attention": name, "length": 64, "status": "ok", "step_time_s": 0.4, "kwargs": {},
      "implementation": None, "memory_bytes": 1, "speedup_vs_transformer": 1.0,
      "memory_vs_transformer": 1.0, "speedup_vs_fastest_exact": 1.0,
      "fastest_exact_implementation": "dense", "gflops_per_s": None, "user_s_per_step": 0.5,
      "sys_s_per_step": sys_s, "page_faults_per_step": 12_000}
  assert benchmark.kernel_bound(row("a", 0.11)) and not benchmark.kernel_bound(row("a", 0.1))
  text = benchmark.markdown([row("heavy", 0.2), row("light", 0.05)])
  heavy = next(line for line in text.splitlines() if line.startswith("| heavy"))
  light = next(line for line in text.splitlines() if line.startswith("| light"))
  assert f"2.50{benchmark.SYS_MARK}" in heavy and benchmark.SYS_MARK not in light
  assert "0.500 / 0.200 / 12k" in heavy


def test_markdown_column_groups_pick_columns_and_unknown_groups_are_named():
  rows = [{"attention": "transformer", "length": n, "status": "ok", "step_time_s": 0.5,
           "kwargs": {}, "implementation": "dense", "memory_bytes": 2**20,
           "speedup_vs_transformer": 1.0, "memory_vs_transformer": 1.0,
           "speedup_vs_fastest_exact": 1.0, "fastest_exact_implementation": "dense",
           "gflops_per_s": 3.0, "flops_while_loops": 0, "user_s_per_step": 0.9,
           "sys_s_per_step": 0.1, "page_faults_per_step": 2000} for n in (64, 128)]
  head = lambda text: text.splitlines()[0]
  cpu = benchmark.markdown(rows, ("cpu",))
  assert head(cpu) == ("| model | user s / sys s / faults per step @64 "
                       "| user s / sys s / faults per step @128 |")
  assert "| transformer | 0.900 / 0.100 / 2k | 0.900 / 0.100 / 2k |" in cpu
  both = benchmark.markdown(rows, ("exact", "steps"))  # always in COLUMN_GROUPS order
  assert head(both) == ("| model | steps/s @64 | steps/s @128 | vs fastest exact (dense) @64 "
                        "| vs fastest exact (dense) @128 |")
  assert "| transformer | 2.00 (1.0x) | 2.00 (1.0x) | 1.00x | 1.00x |" in both
  assert "memory MiB @64" in benchmark.markdown(rows)
  with pytest.raises(ValueError, match="flops_per_watt"):
    benchmark.markdown(rows, ("steps", "flops_per_watt"))


def test_failed_workers_are_named_by_signal_or_by_their_last_error_line():
  assert benchmark.failure_status(-9, "I1129 20:38:01 xla_bridge.py:849] no TPU").startswith(
      "out of memory: worker killed by SIGKILL")
  assert benchmark.failure_status(-15, "") == "failed: worker killed by SIGTERM"
  log = "Traceback ...\nValueError: bad kwarg\nI1129 20:38:01.28 xla_bridge.py:849] no TPU\n"
  assert benchmark.failure_status(1, log) == "failed: ValueError: bad kwarg"
  assert benchmark.failure_status(1, "RESOURCE_EXHAUSTED: Out of memory\n").startswith(
      "out of memory: RESOURCE_EXHAUSTED")
  assert benchmark.failure_status(3, "") == "failed: exit 3"


def test_exact_flag_empty_and_unknown(tmp_path):
  out = tmp_path / "bench.json"
  cmd = [sys.executable, "-m", "lra.benchmark", "--attention=transformer", "--lengths=64",
         *TINY, f"--out={out}"]
  done = subprocess.run(cmd + ["--exact="], cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())
  assert [(r["attention"], r["implementation"]) for r in rows] == [("transformer", "dense")]
  assert rows[0]["speedup_vs_fastest_exact"] == 1.0
  assert rows[0]["fastest_exact_implementation"] == "dense"
  done = subprocess.run(cmd + ["--exact=dense,flash"], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode != 0 and "flash" in done.stderr and "blocked" in done.stderr


def test_ratios_are_relative_to_transformer_at_each_length():
  rows = [{"attention": "transformer", "length": 8, "status": "ok", "step_time_s": 2.0,
           "memory_bytes": 400},
          {"attention": "x", "length": 8, "status": "ok", "step_time_s": 0.5,
           "memory_bytes": 100},
          {"attention": "x", "length": 16, "status": "ok", "step_time_s": 0.5,
           "memory_bytes": 100}]
  benchmark.add_ratios(rows)
  assert rows[1]["speedup_vs_transformer"] == 4.0 and rows[1]["memory_vs_transformer"] == 0.25
  assert rows[1]["speedup_vs_fastest_exact"] == 4.0
  assert rows[1]["fastest_exact_implementation"] == "dense"  # a row without the field: default
  assert rows[2]["speedup_vs_transformer"] is None  # no reference at that length
  assert rows[2]["speedup_vs_fastest_exact"] is None


def test_lra_ratio_stays_dense_while_fastest_exact_is_the_quickest_implementation():
  def row(attention, impl, time, memory, exact_only=False, status="ok"):
    return {"attention": attention, "length": 8, "status": status, "step_time_s": time,
            "memory_bytes": memory, "implementation": impl, "exact_only": exact_only}
  rows = [row("x", None, 1.0, 50), row("transformer", "dense", 3.0, 300),
          row("transformer", "blocked", 2.0, 100, True), row("transformer", "xla", 4.0, 200, True),
          row("transformer", "xla", None, None, True, status="failed: no")]
  benchmark.add_ratios(rows)
  x, dense, blocked, xla, failed = rows
  assert x["speedup_vs_transformer"] == 3.0 and x["memory_vs_transformer"] == 50 / 300
  assert x["speedup_vs_fastest_exact"] == 2.0 and x["fastest_exact_implementation"] == "blocked"
  assert blocked["speedup_vs_transformer"] == 1.5 and blocked["speedup_vs_fastest_exact"] == 1.0
  assert xla["speedup_vs_transformer"] == 0.75 and xla["speedup_vs_fastest_exact"] == 0.5
  assert dense["speedup_vs_fastest_exact"] == 2.0 / 3.0
  assert failed["speedup_vs_transformer"] is None and failed["speedup_vs_fastest_exact"] is None
  # the user's own transformer is the LRA reference where no dense row was measured
  rows = [row("x", None, 1.0, 50), row("transformer", "blocked", 2.0, 100),
          row("transformer", "xla", 1.0, 100, True)]
  benchmark.add_ratios(rows)
  assert rows[0]["speedup_vs_transformer"] == 2.0 and rows[0]["speedup_vs_fastest_exact"] == 1.0
  assert rows[0]["fastest_exact_implementation"] == "xla"


class _Compiled:
  def __init__(self, cost, text="ENTRY main { ROOT x = f32[] constant(0) }"):
    self.cost, self.text = cost, text

  def cost_analysis(self):
    if isinstance(self.cost, Exception):
      raise self.cost
    return self.cost

  def as_text(self):
    return self.text


def test_compiled_flops_handles_dict_list_and_missing():
  assert benchmark.compiled_flops(_Compiled({"flops": 12.0})) == (12.0, 0)
  assert benchmark.compiled_flops(_Compiled([{"flops": 7.0}])) == (7.0, 0)
  assert benchmark.compiled_flops(_Compiled(None)) == (None, None)
  assert benchmark.compiled_flops(_Compiled([])) == (None, None)
  assert benchmark.compiled_flops(_Compiled({"flops": -1.0})) == (None, None)
  assert benchmark.compiled_flops(_Compiled(NotImplementedError())) == (None, None)


def test_compiled_flops_counts_a_matmul_and_flags_loops():
  n = 64
  a = jnp.ones((n, n))
  compiled = jax.jit(lambda a, b: a @ b).lower(a, a).compile()
  flops, loops = benchmark.compiled_flops(compiled)
  assert flops == pytest.approx(2 * n ** 3, rel=0.01) and loops == 0

  def repeated(a, b):
    return jax.lax.scan(lambda c, _: (c @ b, None), a, None, length=10)[0]
  flops, loops = benchmark.compiled_flops(jax.jit(repeated).lower(a, a).compile())
  assert loops >= 1 and flops < 10 * 2 * n ** 3  # XLA counts the loop body once: a lower bound


def test_full_model_xla_transformer_runs_without_attention_dropout():
  assert benchmark.attention_dropout_rate("transformer", {"implementation": "xla"}, "full") == 0
  assert benchmark.attention_dropout_rate("transformer", {}, "full") == 0.1  # LRA's rate
  assert benchmark.attention_dropout_rate("transformer", {"implementation": "xla"}, "block") == 0
  spec = {"attention": "transformer", "length": 16, "batch": 1, "emb_dim": 16, "num_heads": 2,
          "qkv_dim": 16, "mlp_dim": 32, "num_layers": 1, "block": "encoder", "model": "full",
          "kwargs": {"implementation": "xla"}, "repeats": 1,
          "attention_dropout_rate": benchmark.attention_dropout_rate(
              "transformer", {"implementation": "xla"}, "full")}
  result = benchmark.measure(spec)
  assert result["status"] == "ok" and result["loss_finite"] and result["flops"] > 0


def test_ratios_of_every_row_are_recomputed_from_the_raw_numbers():
  """Rows in an order where the dense Transformer is neither first nor fastest, at two lengths
  with different references: each row's ratios against values computed here from the step
  times and memories of the right reference rows."""
  def row(attention, impl, length, time, memory, exact_only=False):
    return {"attention": attention, "length": length, "status": "ok", "step_time_s": time,
            "memory_bytes": memory, "implementation": impl, "exact_only": exact_only}
  raw = [row("transformer", "blocked", 64, 0.8, 120, True),
         row("x", None, 64, 0.5, 40),
         row("transformer", "dense", 64, 1.6, 300),
         row("transformer", "xla", 64, 1.2, 90, True),
         row("y", None, 128, 2.5, 700),
         row("transformer", "xla", 128, 4.0, 1000, True),
         row("transformer", "dense", 128, 5.0, 1400),
         row("x", None, 128, 1.0, 350)]
  rows = benchmark.add_ratios([dict(r) for r in raw])
  dense = {n: next(r for r in raw if r["length"] == n and r["implementation"] == "dense")
           for n in (64, 128)}
  fastest = {64: ("blocked", 0.8), 128: ("xla", 4.0)}
  for before, after in zip(raw, rows):
    n = before["length"]
    assert after["speedup_vs_transformer"] == pytest.approx(
        dense[n]["step_time_s"] / before["step_time_s"])
    assert after["memory_vs_transformer"] == pytest.approx(
        before["memory_bytes"] / dense[n]["memory_bytes"])
    assert after["fastest_exact_implementation"] == fastest[n][0]
    assert after["speedup_vs_fastest_exact"] == pytest.approx(fastest[n][1] / before["step_time_s"])
  # spot values, by hand: x at 64 is 1.6 / 0.5 = 3.2x the dense speed in 40 / 300 of its memory
  x64 = rows[1]
  assert (x64["speedup_vs_transformer"], x64["memory_vs_transformer"]) == pytest.approx(
      (3.2, 40 / 300))
  assert rows[7]["speedup_vs_transformer"] == pytest.approx(5.0)
  assert rows[0]["speedup_vs_transformer"] == pytest.approx(2.0)  # blocked vs dense at 64


def test_transformer_rows_without_an_implementation_are_measured_and_named_dense(monkeypatch):
  """"auto" is the module's default now; a `transformer` spec (or a recorded row) that names no
  implementation is LRA's dense baseline: built with implementation='dense' explicitly and named
  `transformer`. "auto" rows are named `transformer (auto)`."""
  from models.attention import transformer  # pylint: disable=import-outside-toplevel
  assert transformer.SoftmaxAttention().implementation == "auto"
  seen = []
  original = transformer.SoftmaxAttention.__call__

  def spy(self, *args, **kwargs):
    seen.append(self.implementation)
    return original(self, *args, **kwargs)

  monkeypatch.setattr(transformer.SoftmaxAttention, "__call__", spy)
  spec = {"attention": "transformer", "length": 8, "batch": 1, "emb_dim": 16, "num_heads": 2,
          "qkv_dim": 16, "mlp_dim": 32, "num_layers": 1, "block": "block", "model": "block"}
  for kwargs, expected in (({}, "dense"), ({"implementation": "auto"}, "auto"),
                           ({"block_q": 4}, "dense")):
    seen.clear()
    benchmark._module_and_batch({**spec, "kwargs": kwargs})  # pylint: disable=protected-access
    assert seen and set(seen) == {expected}, (kwargs, seen)
  assert benchmark.implementation_of({"attention": "transformer", "kwargs": {}}) == "dense"
  assert benchmark.label({"attention": "transformer", "kwargs": {}}) == "transformer"
  assert benchmark.label({"attention": "transformer", "length": 8}) == "transformer"  # recorded
  assert benchmark.label({"attention": "transformer",
                          "kwargs": {"implementation": "auto"}}) == "transformer (auto)"
  assert benchmark.label({"attention": "transformer", "implementation": "auto"}) == \
      "transformer (auto)"
  assert "auto" in benchmark.exact_implementations("dense,auto")


def test_lra_ratio_is_against_dense_when_auto_is_measured_too():
  rows = [{"attention": a, "length": 8, "status": "ok", "step_time_s": t, "memory_bytes": m,
           "implementation": i, "exact_only": e}
          for a, i, t, m, e in (("transformer", "auto", 1.0, 100, True),
                                ("transformer", "dense", 2.0, 400, False),
                                ("x", None, 0.5, 50, False))]
  auto, dense, x = benchmark.add_ratios(rows)
  assert x["speedup_vs_transformer"] == 4.0 and x["memory_vs_transformer"] == 50 / 400
  assert auto["speedup_vs_transformer"] == 2.0
  assert x["fastest_exact_implementation"] == "auto" and x["speedup_vs_fastest_exact"] == 2.0


@pytest.mark.parametrize("name,kwargs", [("luna", {"packed_length": 4, "num_heads": 2}),
                                         ("routing", {"num_clusters": 2})])
def test_a_block_with_a_memory_or_training_state_is_timed_with_it(name, kwargs):
  """Luna's block returns (y, next_memory), both in the loss; Routing's step updates its EMA
  centroids (batch_stats) as training does, and the step returns them."""
  spec = {"attention": name, "length": 16, "batch": 1, "emb_dim": 16, "num_heads": 2,
          "qkv_dim": 16, "mlp_dim": 32, "num_layers": 1, "block": "encoder", "model": "block",
          "kwargs": kwargs, "repeats": 1}
  apply, params, batch = benchmark._module_and_batch(spec)  # pylint: disable=protected-access
  out, state = apply(params, batch, jax.random.key(0))
  if name == "routing":
    assert "batch_stats" in state  # the training step's updated centroids
  else:
    assert isinstance(out, tuple) and out[1].shape == (1, 4, 16)
  result = benchmark.measure(spec)
  assert result["status"] == "ok" and result["loss_finite"]


def test_decode_mode_measures_tokens_per_second_and_cache_bytes(tmp_path):
  """--mode=decode: a row per causal variant and length; a KV cache grows with the tokens, a
  running state does not; a variant without an incremental form is a row with its reason, and
  a non-causal one has no row."""
  out, md = tmp_path / "decode.json", tmp_path / "decode.md"
  cmd = [sys.executable, "-m", "lra.benchmark", "--mode=decode",
         "--attention=transformer,performer,reformer,linformer", "--lengths=16,32",
         "--num_layers=1", *TINY, f"--out={out}", f"--markdown={md}",
         '--attention_kwargs={"performer": {"num_features": 8}}']
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = {(r["attention"], r["length"]): r for r in json.loads(out.read_text())}
  assert sorted(rows) == [(a, n) for a in ("performer", "reformer", "transformer")
                          for n in (16, 32)]
  for name in ("transformer", "performer"):
    for n in (16, 32):
      row = rows[name, n]
      assert row["status"] == "ok" and row["tokens_per_s"] > 0 and row["compile_time_s"] > 0
  assert rows["transformer", 32]["cache_bytes"] > 1.8 * rows["transformer", 16]["cache_bytes"]
  assert rows["performer", 32]["cache_bytes"] == rows["performer", 16]["cache_bytes"]
  assert rows["performer", 16]["kwargs"] == {"num_features": 8}
  assert rows["reformer", 16]["status"].startswith("cannot decode: ")
  table = md.read_text()
  assert "| transformer | kv |" in table and "| performer | state |" in table
  assert "| reformer | - | no incremental form" in table
