"""The efficiency benchmark on tiny lengths: JSON schema, ratios, failures recorded. No timing
is asserted (these machines are noisy)."""
import json
import subprocess
import sys
from pathlib import Path

from lra import benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_writes_rows_tables_and_plot(tmp_path):
  out, md, png = tmp_path / "bench.json", tmp_path / "bench.md", tmp_path / "bench.png"
  cmd = [sys.executable, "-m", "lra.benchmark", "--attention=transformer,local",
         "--lengths=32,64", "--batch=1", "--emb_dim=16", "--qkv_dim=16", "--num_heads=2",
         "--mlp_dim=32", "--repeats=1", f"--out={out}", f"--markdown={md}", f"--plot={png}",
         '--attention_kwargs={"local": {"bogus_kwarg": 1}}']
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = json.loads(out.read_text())
  assert {(r["attention"], r["length"]) for r in rows} == {
      ("transformer", 32), ("transformer", 64), ("local", 32), ("local", 64)}
  for row in rows:
    for key in benchmark.ROW_KEYS:
      assert key in row, key
    if row["attention"] == "transformer":
      assert row["status"] == "ok"
      assert row["step_time_s"] > 0 and row["compile_time_s"] > 0
      assert row["memory_bytes"] > 0 and row["peak_rss_bytes"] > 0
      assert row["speedup_vs_transformer"] == 1.0 and row["memory_vs_transformer"] == 1.0
    else:  # a variant that fails is recorded, and the benchmark goes on
      assert row["status"].startswith("failed") and "bogus_kwarg" in row["status"]
      assert row["speedup_vs_transformer"] is None
  assert "| transformer |" in md.read_text() and "failed" in md.read_text()
  assert png.stat().st_size > 1000


def test_ratios_are_relative_to_transformer_at_each_length():
  rows = [{"attention": "transformer", "length": 8, "status": "ok", "step_time_s": 2.0,
           "memory_bytes": 400},
          {"attention": "x", "length": 8, "status": "ok", "step_time_s": 0.5,
           "memory_bytes": 100},
          {"attention": "x", "length": 16, "status": "ok", "step_time_s": 0.5,
           "memory_bytes": 100}]
  benchmark.add_ratios(rows)
  assert rows[1]["speedup_vs_transformer"] == 4.0 and rows[1]["memory_vs_transformer"] == 0.25
  assert rows[2]["speedup_vs_transformer"] is None  # no reference at that length
