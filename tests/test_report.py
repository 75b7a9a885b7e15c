"""lra.report on a runs folder written here (schema-exact results.json/config.json/metrics.jsonl,
no training). Expected numbers are computed in the test with numpy from the values written."""
import csv
import io
import json
import subprocess
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from lra import report

ROOT = Path(__file__).resolve().parents[1]

# (attention, task) -> [(seed, final test accuracy, test accuracy at best validation)]
ACCURACY = {
    ("transformer", "listops"): [(0, 0.371, 0.380), (1, 0.362, 0.366), (2, 0.355, 0.371)],
    ("transformer", "text"): [(0, 0.612, 0.620), (1, 0.634, 0.633)],
    ("performer", "listops"): [(0, 0.392, 0.401), (1, 0.388, 0.385)],  # no Text: missing cell
    ("local", "listops"): [(0, 0.301, 0.310)],  # one seed: no ±
    ("local", "text"): [(0, 0.655, 0.640)],
}
PARAMETERS = {"transformer": 100_000, "performer": 120_000, "local": 105_000}  # performer: +20%
MAJORITY = {"listops": 0.124, "text": 0.5}
TEST_EXAMPLES = {"listops": 1000, "text": 25000}
LABELS = ["transformer", "performer", "local"]


def config(attention, task, seed, **train):
  return {"seed": seed, "task": task, "data_dir": f"/data/{seed}", "cache_dir": "",
          "data": {"max_length": 64},
          "model": {"attention": attention, "attention_kwargs": {"block_size": 8},
                    "emb_dim": 16, "num_layers": 2},
          "train": {"learning_rate": 0.05, "num_train_steps": 300, **train}}


def write_run(directory, attention, task, seed, final, best, *, cfg=None, best_missing=False):
  directory.mkdir(parents=True)
  cfg = cfg or config(attention, task, seed)
  (directory / "config.json").write_text(json.dumps(cfg, indent=1))
  split = lambda acc: {"accuracy": acc, "loss": 1.0 - acc, "examples": TEST_EXAMPLES[task]}
  results = {"task": task, "attention": attention, "steps": 300,
             "parameters": PARAMETERS[attention],
             "splits": {"validation": split(final + 0.01), "test": split(final)},
             "best_validation": {"best_accuracy": best + 0.01, "best_step": 200},
             "test_at_best_validation": split(best),
             "test_majority_class_rate": MAJORITY[task], "steps_per_s": 10.0,
             "compiled_train_step_memory_bytes": 2**20, "peak_rss_bytes": 2**28,
             "wall_time_s": 30.0, "config": cfg}
  if best_missing:
    del results["test_at_best_validation"]
  (directory / "results.json").write_text(json.dumps(results, indent=1))
  lines = []
  for step in (100, 200, 300):
    lines.append({"step": step, "split": "train", "accuracy": 0.3, "loss": 1.5})
    lines.append({"step": step, "split": "validation", "accuracy": final * step / 300,
                  "loss": 1.2})
  (directory / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))


@pytest.fixture(name="runs")
def runs_folder(tmp_path):
  root = tmp_path / "runs"
  for (attention, task), seeds in ACCURACY.items():
    for seed, final, best in seeds:
      write_run(root / f"{attention}_{task}_seed{seed}", attention, task, seed, final, best)
  unfinished = root / "nested" / "performer_text_seed0"  # started, never finished
  unfinished.mkdir(parents=True)
  (unfinished / "config.json").write_text(json.dumps(config("performer", "text", 0)))
  return root


def test_sweep_index_names_runs_that_never_wrote_a_directory(runs):
  records = [{"run": "local_listops_seed0", "state": "running"},
             {"run": "local_listops_seed0", "state": "done"},
             {"run": "local_text_seed5", "state": "failed", "reason": "exit 1"}]
  (runs / "sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{cut")
  text = report.build_report(str(runs))
  assert "2 run(s) without results.json" in text
  assert f"{runs / 'local_text_seed5'} (sweep: failed, exit 1)" in text
  assert "local_listops_seed0 (" not in text


def expected(select="final"):
  """(attention, task) -> (mean %, sample std % or None, seeds), with numpy."""
  out = {}
  for key, seeds in ACCURACY.items():
    values = np.array([100 * (final if select == "final" else best) for _, final, best in seeds])
    out[key] = (values.mean(), values.std(ddof=1) if len(values) > 1 else None, len(values))
  return out


def cell(mean, std, n):
  return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" ({n})"


def markdown_table(text, title_start):
  """{first cell: [cells]} of the Markdown table under the heading that starts so."""
  lines = text.splitlines()
  start = next(i for i, l in enumerate(lines) if l.startswith("## " + title_start))
  rows, header = {}, None
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip("|").split("|")]
    if header is None:
      header = cells
    elif not set(line) <= set("|-"):
      rows[cells[0]] = cells[1:]
  return header, rows


def csv_blocks(text):
  """{title: [records]} from the CSV output's blocks."""
  blocks = {}
  for block in text.strip().split("\n\n"):
    lines = block.splitlines()
    titles = [l for l in lines if l.startswith("#")]
    body = [l for l in lines if not l.startswith("#")]
    if body:
      blocks[titles[0][2:]] = list(csv.DictReader(io.StringIO("\n".join(body))))
  return blocks


def test_table1_markdown_cells_missing_best_and_incomplete_average(runs, capsys):
  text = report.build_report(str(runs))
  assert "performer_text_seed0" in capsys.readouterr().err  # the unfinished run is named
  assert "1 run(s) without results.json" in text
  header, rows = markdown_table(text, "Table 1")
  assert header == ["Model", "ListOps", "Text", "Retrieval", "Image", "Pathfinder", "Path-X",
                    "Avg"]
  want = expected()
  best = {t: max(want[k][0] for k in want if k[1] == t) for t in ("listops", "text")}
  for label in LABELS:
    for column, task in ((0, "listops"), (1, "text")):
      if (label, task) not in want:
        assert rows[label][column] == "–"  # missing, never zero
        continue
      mean, std, n = want[(label, task)]
      text_cell = cell(mean, std, n)
      assert rows[label][column] == (f"**{text_cell}**" if mean == best[task] else text_cell)
    assert rows[label][2:6] == ["–"] * 4
  assert rows["local"][0] == "30.10 (1)"  # one seed: no ±
  assert "**" in rows["performer"][0] and "**" in rows["local"][1]  # best per column
  # Avg over the tasks a row has; incomplete rows are marked and named in a footnote
  avg = {label: np.mean([want[k][0] for k in want if k[0] == label]) for label in LABELS}
  assert rows["performer"][6] == f"{avg['performer']:.2f}†"
  assert "† performer: Avg over ListOps only (no Text)" in text
  best_avg = max(avg["transformer"], avg["local"])  # among complete rows only
  for label in ("transformer", "local"):
    value = f"{avg[label]:.2f}"
    assert rows[label][6] == (f"**{value}**" if avg[label] == best_avg else value)
  assert list(rows) == ["transformer", "local", "performer"]  # Transformer first, then by Avg


def test_select_best_validation_and_a_run_without_it(runs):
  text = report.build_report(str(runs), select="best_validation")
  _, rows = markdown_table(text, "Table 1")
  want = expected("best_validation")
  mean, std, n = want[("transformer", "listops")]
  assert rows["transformer"][0].strip("*") == cell(mean, std, n)
  assert "test_at_best_validation.accuracy" in text
  write_run(runs / "local_text_seed1", "local", "text", 1, 0.6, 0.6, best_missing=True)
  with pytest.raises(report.ReportError, match="local_text_seed1.*test_at_best_validation"):
    report.build_report(str(runs), select="best_validation")


def test_fairness_marks_and_majority_rate(runs):
  text = report.build_report(str(runs))
  header, rows = markdown_table(text, "Parameters")
  assert header == ["Model", "ListOps", "Text"]
  for label in LABELS:
    diff = PARAMETERS[label] / PARAMETERS["transformer"] - 1
    marked = abs(diff) > 0.10
    assert rows[label][0] == f"{PARAMETERS[label]:,} ({diff:+.1%})" + (" ‡" if marked else "")
  assert rows["performer"][0].endswith("‡") and not rows["local"][0].endswith("‡")
  assert rows["performer"][1] == "–"
  _, rows = markdown_table(text, "Chance level")
  assert rows["majority-class rate (%)"] == [f"{100 * MAJORITY['listops']:.2f}",
                                             f"{100 * MAJORITY['text']:.2f}"]
  assert rows["test examples"] == ["1000", "25000"]


def test_published_beside_ours_with_difference(runs):
  text = report.build_report(str(runs), published=True)
  assert "papers' scale" in text.splitlines()[4]  # in the output's header
  _, rows = markdown_table(text, "Table 1")
  mean = expected()[("transformer", "listops")][0]
  assert rows["transformer"][0].endswith(f" / 36.37 ({mean - 36.37:+.2f})")  # LRA Table 1
  assert rows["transformer"][5] == "– / FAIL"  # Path-X: the paper's FAIL
  assert rows["transformer"][6].endswith(" / 54.39")  # Avg over other tasks: no difference
  assert rows["bigbird (published only)"][0] == "– / 36.05"
  assert rows["s4 (published only)"][5] == "– / 96.35"
  assert "performer (published only)" not in rows
  blocks = csv_blocks(report.build_report(str(runs), fmt="csv", published=True))
  table1 = {r["model"]: r for r in blocks[next(t for t in blocks if t.startswith("Table 1"))]}
  assert float(table1["performer"]["listops_diff"]) == pytest.approx(
      expected()[("performer", "listops")][0] - 18.01, abs=1e-6)
  assert table1["performer"]["pathx_published"] == "FAIL"
  assert table1["bigbird"]["published_only"] == "1"


def test_csv_and_latex_formats(runs):
  blocks = csv_blocks(report.build_report(str(runs), fmt="csv"))
  table1 = {r["model"]: r for r in blocks[next(t for t in blocks if t.startswith("Table 1"))]}
  want = expected()
  for (label, task), (mean, std, n) in want.items():
    row = table1[label]
    assert float(row[f"{task}_mean"]) == pytest.approx(mean, abs=1e-6)
    assert (row[f"{task}_std"] == "") if std is None else float(row[f"{task}_std"]) == \
        pytest.approx(std, abs=1e-6)
    assert int(row[f"{task}_seeds"]) == n
  assert table1["performer"]["text_mean"] == "" and table1["performer"]["text_seeds"] == "0"
  assert table1["performer"]["listops_best"] == "*" and table1["transformer"]["listops_best"] == ""
  assert table1["performer"]["avg_complete"] == "0" and table1["local"]["avg_complete"] == "1"
  params = {r["model"]: r for r in blocks[next(t for t in blocks if t.startswith("Parameters"))]}
  assert params["performer"]["listops_unfair"] == "*" and params["local"]["listops_unfair"] == ""
  assert float(params["performer"]["listops_vs_transformer"]) == pytest.approx(0.2)

  latex = report.build_report(str(runs), fmt="latex")
  assert r"\begin{tabular}" in latex and r"\end{tabular}" in latex
  mean, std, n = want[("transformer", "listops")]
  assert f"transformer & {mean:.2f} $\\pm$ {std:.2f} ({n}) & " in latex
  mean, std, n = want[("performer", "listops")]
  assert f"performer & \\textbf{{{mean:.2f} $\\pm$ {std:.2f} ({n})}} & -- &" in latex
  assert r"$^\dagger$" in latex and r"$^\ddagger$" in latex


def test_config_mismatch_and_duplicate_seed_are_errors(runs):
  other = runs / "elsewhere" / "transformer_listops_seed3"
  write_run(other, "transformer", "listops", 3, 0.3, 0.3,
            cfg=config("transformer", "listops", 3, learning_rate=0.01))
  with pytest.raises(report.ReportError) as error:
    report.build_report(str(runs))
  message = str(error.value)
  assert "transformer_listops_seed0" in message and "transformer_listops_seed3" in message
  assert "train.learning_rate" in message
  (other / "config.json").write_text(json.dumps(config("transformer", "listops", 0)))
  with pytest.raises(report.ReportError, match="seed 0 twice"):
    report.build_report(str(runs))


def bench_rows():
  """lra.benchmark rows at two lengths (the schema it writes), ratios left for the report."""
  rows = []
  for length, times in ((64, {"dense": 0.4, "blocked": 0.2, "xla": 0.5, "performer": 0.1,
                              "local": 0.25}),
                        (128, {"dense": 1.0, "blocked": 0.5, "xla": 0.8, "performer": 0.2,
                               "local": 0.4})):
    for name, time in times.items():
      exact = name in ("dense", "blocked", "xla")
      rows.append({"attention": "transformer" if exact else name, "length": length,
                   "batch": 2, "status": "ok", "step_time_s": time, "compile_time_s": 1.0,
                   "memory_bytes": int(2**20 * (10 if name == "dense" else 4) * length / 64),
                   "peak_rss_bytes": 2**28, "kwargs": {"implementation": name} if exact else {},
                   "implementation": name if exact else None, "exact_only": name != "dense" and
                   exact, "flops": 2e9 * length / 64, "flops_while_loops": int(name == "blocked"),
                   "gflops_per_s": 2 * length / 64 / time})
  return rows


def test_table2_and_plots(runs, tmp_path):
  bench = tmp_path / "bench.json"
  rows = bench_rows()
  bench.write_text(json.dumps(rows))
  fig3, curves = tmp_path / "fig3.png", tmp_path / "curves.png"
  text = report.build_report(str(runs), bench=str(bench), plot=str(fig3), curves=str(curves))
  header, table = markdown_table(text, "Table 2 at length 128")
  assert header[:2] == ["Model", "steps/s"] and "speed-up vs fastest exact" in header
  at = {(r["implementation"] or r["attention"]): r for r in rows if r["length"] == 128}
  fastest = min(("dense", "blocked", "xla"), key=lambda i: at[i]["step_time_s"])
  performer = table["performer"]
  assert performer[0] == f"{1 / at['performer']['step_time_s']:.2f}"
  assert performer[1] == f"{at['dense']['step_time_s'] / at['performer']['step_time_s']:.2f}x"
  assert performer[3] == (f"{at['performer']['memory_bytes'] / at['dense']['memory_bytes']:.2f}x")
  assert performer[4] == f"{at[fastest]['step_time_s'] / at['performer']['step_time_s']:.2f}x"
  assert performer[5] == f"{at['performer']['flops'] / 1e9:.3g}"
  assert table["transformer (blocked)"][6].startswith(">=")  # XLA counted its loops once
  assert f"({fastest})" in text
  for png in (fig3, curves):
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
  with pytest.raises(report.ReportError, match="bench_length=100"):
    report.build_report(str(runs), bench=str(bench), plot=str(fig3), bench_length=100)
  with pytest.raises(report.ReportError, match="--bench"):
    report.build_report(str(runs), plot=str(fig3))


def test_command_line(runs, tmp_path):
  out = tmp_path / "report.csv"
  cmd = [sys.executable, "-m", "lra.report", f"--runs={runs}", "--format=csv", f"--out={out}",
         "--published", f"--curves={tmp_path / 'curves.png'}"]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "performer_text_seed0" in done.stderr and "unfinished" in done.stderr
  blocks = csv_blocks(out.read_text())
  table1 = {r["model"]: r for r in blocks[next(t for t in blocks if t.startswith("Table 1"))]}
  assert float(table1["transformer"]["listops_mean"]) == pytest.approx(
      expected()[("transformer", "listops")][0], abs=1e-6)
  assert (tmp_path / "curves.png").stat().st_size > 5000
  done = subprocess.run([sys.executable, "-m", "lra.report", f"--runs={tmp_path / 'none'}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2 and "not a folder" in done.stderr
  assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback


def test_results_without_config_json_use_the_config_in_results(runs):
  (runs / "local_text_seed0" / "config.json").unlink()
  text = report.build_report(str(runs))
  _, rows = markdown_table(text, "Table 1")
  assert rows["local"][1].strip("*") == cell(*expected()[("local", "text")])


def test_collected_runs_give_the_same_tables_as_the_folder(runs, tmp_path):
  collected = tmp_path / "collected.json"
  cmd = [sys.executable, "-m", "lra.report", f"--runs={runs}", "--published",
         f"--out={tmp_path / 'folder.md'}", f"--collect={collected}"]
  done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  data = json.loads(collected.read_text())
  assert len(data["runs"]) == sum(len(seeds) for seeds in ACCURACY.values())
  assert any("performer_text_seed0" in entry for entry in data["unfinished"])
  shutil.rmtree(runs)  # the collected file alone must carry everything the tables need
  from_file = report.build_report(str(collected), published=True)
  from_folder = (tmp_path / "folder.md").read_text()
  body = lambda text: [l for l in text.splitlines() if not l.startswith("Runs:")]
  assert body(from_file) == body(from_folder)
  assert "transformer" in markdown_table(from_file, "Table 1")[1]
  (tmp_path / "bad.json").write_text(json.dumps({"runs": [{"path": "x"}]}))
  with pytest.raises(report.ReportError, match=r"bad.json: runs\[0\] has no results, config"):
    report.build_report(str(tmp_path / "bad.json"))


def test_s4d_is_compared_with_the_s4d_legs_row(tmp_path):
  """configs/s4d_*.py are the S4 repo's `init: legs` LRA configs: the S4D paper's S4D-LegS row."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setitem(PARAMETERS, "s4d", 1000)
    write_run(tmp_path / "runs" / "s4d_listops_seed0", "s4d", "listops", 0, 0.5, 0.5)
  _, rows = markdown_table(report.build_report(str(tmp_path / "runs"), published=True), "Table 1")
  assert rows["s4d"][0].endswith(" / 60.47 (-10.47)")
  assert "s4d_legs (published only)" not in rows and "s4 (published only)" in rows


def test_run_labels_name_the_transformer_implementation():
  """A run whose config names no implementation, dense, or "auto" (today's default: the fastest
  exact kernel) is `transformer`, the row published numbers are matched to; one naming blocked
  or xla is labelled by it. Benchmark rows (speed) name "auto" apart."""
  def label(kwargs):
    config = {"model": {"attention_kwargs": kwargs}}
    return report.Run(Path("."), {"attention": "transformer"}, config).label
  assert label({}) == "transformer" and label(None) == "transformer"
  assert label({"implementation": "dense"}) == "transformer"
  assert label({"implementation": "auto"}) == "transformer"
  assert label({"implementation": "blocked", "block_q": 8}) == "transformer (blocked)"
  rows = bench_rows()
  rows.append({**rows[0], "implementation": "auto", "kwargs": {"implementation": "auto"},
               "exact_only": True})
  from lra import benchmark  # pylint: disable=import-outside-toplevel
  assert "transformer (auto)" in {benchmark.label(r) for r in rows}
  assert sum(benchmark.label(r) == "transformer" for r in rows) == 2  # one dense per length
