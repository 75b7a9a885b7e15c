"""Figures in the README's prose are computed here from the committed files they cite.

Tables are checked by tests/test_readme_tables.py; this covers the numbers in sentences. Each
check formats the figure from the file as the README writes it and looks for the phrase (the
README's line breaks read as spaces).
"""
import json
import statistics
from pathlib import Path

from models.attention import registry

ROOT = Path(__file__).resolve().parents[1]


def readme() -> str:
  return " ".join((ROOT / "README.md").read_text().split())


def load(path: str):
  return json.loads((ROOT / path).read_text())


def assert_in_readme(phrase: str):
  assert " ".join(phrase.split()) in readme(), f"README lacks (from its committed file): {phrase}"


def gb(n_bytes: float) -> str:
  return f"{n_bytes / 1e9:.1f} GB"


def test_small_listops_sweep_figures():
  """The X-formers' 36 runs and the sequence mixers' runs (added later) are described apart."""
  runs = load("docs/small_listops_results.json")
  assert not runs["unfinished"]
  kinds = {name: registry.get(name).kind for name in registry.names()}
  results = [entry["results"] for entry in runs["runs"]]
  test_size = results[0]["task_sizes"]["test"]
  chance = 100 * results[0]["test_majority_class_rate"]
  assert_in_readme(f"the test set's majority class is {chance:.1f}% ({test_size:,} examples)")
  for kind, phrase in (("qkv", "variants"), ("sequence", "sequence mixers")):
    mine = [r for r in results if kinds[r["attention"]] == kind]
    walls = sorted(r["wall_time_s"] for r in mine)
    by_variant = {}
    for result in mine:
      by_variant.setdefault(result["attention"], []).append(
          100 * result["splits"]["test"]["accuracy"])
    seeds = {len(accs) for accs in by_variant.values()}
    assert len(seeds) == 1, f"{kind}: variants with different numbers of seeds {seeds}"
    n_seeds = seeds.pop()
    assert_in_readme(f"{len(by_variant)} {phrase} x {n_seeds} seed{'s' * (n_seeds > 1)} = "
                     f"{len(walls)} runs")
    assert_in_readme(f"runs took {walls[0]:.0f}-{walls[-1]:.0f} s each (median "
                     f"{statistics.median(walls):.0f} s; {sum(walls) / 60:.0f} min in all")
    means = {name: statistics.mean(accs) for name, accs in by_variant.items()}
    low, high = min(means.values()), max(means.values())
    assert_in_readme(f"within {high - low:.1f} points of each other ({low:.1f}-{high:.1f}%)")
    if n_seeds > 1:
      stds = [statistics.stdev(accs) for accs in by_variant.values()]
      assert_in_readme(f"seed-to-seed std (up to {max(stds):.2f} points)")
    if kind == "qkv":
      transformer = means["transformer"]
      assert_in_readme(f"the Transformer's {transformer:.1f}% is {transformer - chance:.1f} "
                       "points above it")
    else:
      best = max(means, key=means.get)
      assert_in_readme(f"`{best}` leads the sequence mixers with {means[best]:.1f}%")


def test_torch_rerun_noise_figures():
  first = {r["length"]: r["step_time_s"] for r in load("docs/torch_attention.json")}
  rerun = {r["length"]: r["step_time_s"] for r in load("docs/torch_attention_rerun.json")}
  spread = max(abs(rerun[n] / first[n] - 1) for n in first)
  assert_in_readme(f"moves by up to {100 * spread:.0f}% between runs")
  assert_in_readme(f"{first[4096]:.2f} s and {rerun[4096]:.2f} s at 4096, {first[8192]:.2f} s and "
                   f"{rerun[8192]:.2f} s at 8192")


def test_key_block_size_figures():
  rows = {r["kwargs"]["block_k"]: r["step_time_s"] for r in load("docs/benchmark_block_k_8192.json")}
  assert_in_readme(f"took {rows[16384]:.2f} s against {rows[4096]:.2f} s with two key blocks of 4096")


def test_malloc_before_after_table_and_prose():
  record = load("docs/cpu_overhead_l256.json")
  before, after = record["runs"]["before"], record["runs"]["after"]

  def row(label, run, speedup=""):
    return (f"| {label} | {run['steps_per_s']:.2f}{speedup} | {run['user_s']:.0f} s | "
            f"{run['sys_s']:.{0 if run['sys_s'] >= 100 else 1}f} s | "
            f"{run['minor_page_faults'] / 1e6:.{1 if run['minor_page_faults'] >= 1e8 else 2}f} M | "
            f"{run['wall_s']:.0f} s | {run['test_accuracy']:.3f} | {gb(run['peak_rss_bytes'])} |")

  assert_in_readme(row("glibc defaults (`LRA_MALLOC=system`)", before))
  assert_in_readme(row("`lra/malloc.py` (default)", after,
                       f" ({after['steps_per_s'] / before['steps_per_s']:.2f}x)"))
  assert_in_readme(f"System time fell from {100 * before['sys_s'] / before['user_s']:.0f}% of user "
                   f"time to {100 * after['sys_s'] / after['user_s']:.1f}%")
  assert before["test_loss"] == after["test_loss"]  # "the same test loss to every digit"
  assert_in_readme(f"({after['compiled_train_step_memory_bytes'] / 1e6:.0f} MB of compiled "
                   f"temporaries) peaks at {gb(after['peak_rss_bytes'])} against "
                   f"{gb(before['peak_rss_bytes'])} with glibc's defaults")


def test_dense_8192_peak_figure():
  dense = next(r for r in load("docs/benchmark_attention_only.json")
               if r["attention"] == "transformer" and not r.get("kwargs") and r["length"] == 8192)
  assert_in_readme(f"({gb(dense['peak_rss_bytes'])} peak for the {gb(dense['memory_bytes'])} step")


def test_quick_listops_chance_level():
  runs = load("docs/quick_listops_results.json")["runs"]
  rates = {entry["results"]["test_majority_class_rate"] for entry in runs}
  assert len(runs) == 24 and len(rates) == 1  # the first zoo's twelve and zoo II's twelve
  rate = 100 * rates.pop()
  assert_in_readme(f"set majority-class rate {rate:.1f}%)")
  assert_in_readme(f"the test set's majority class is {rate:.1f}%")
  test = {e["results"]["attention"]: 100 * e["results"]["splits"]["test"]["accuracy"]
          for e in runs}
  assert min(test, key=test.get) == "routing"
  assert_in_readme(f"Routing learns least ({test['routing']:.1f}%)")


def test_input_pipeline_figures():
  bench = load("docs/input_pipeline_cpu.json")
  rate = lambda workers: sorted(p["batches_per_s"] for r in bench["results"]
                                for p in r["pipeline"] if p["workers"] == workers)
  threads, processes = rate(0), rate(2)
  assert_in_readme(f"pipeline builds {threads[0]:,.0f}-{threads[-1]:,.0f} batches/s with threads")
  assert_in_readme(f"and {processes[0]:,.0f}-{processes[-1]:,.0f} with 2 worker processes")
  steps = {r["task"]: r["train_step"] for r in bench["results"]}
  # every task's full step is over 60 s: measured-and-extrapolated, or stopped at the limit
  for task, step in steps.items():
    assert (step.get("extrapolated_s") or 0) > 60 or "> 60 s" in step.get("skipped", "") or (
        "stopped after" in step.get("skipped", "")), (task, step)
  assert_in_readme(f"about {steps['text']['extrapolated_s']:.0f} s for Text, extrapolated from "
                   f"batch {steps['text']['runs'][0]['batch']}")
  slowest_step_rate = 1 / 60
  assert threads[0] / slowest_step_rate > 1e4  # "four to five orders of magnitude"


def test_precision_figures():
  acc = {}
  for dtype in ("float32", "bfloat16"):
    runs = load(f"docs/precision_listops_quick_{dtype}.json")["runs"]
    assert {r["config"]["model"]["dtype"] for r in runs} == {dtype}
    acc[dtype] = [100 * r["results"]["splits"]["test"]["accuracy"]
                  for r in sorted(runs, key=lambda r: r["config"]["seed"])]
  mean = {d: statistics.mean(v) for d, v in acc.items()}
  assert_in_readme(f"accuracy {mean['float32']:.1f}% in float32 and {mean['bfloat16']:.1f}% in "
                   f"bfloat16 (means {abs(mean['float32'] - mean['bfloat16']):.1f} points apart")
  per_seed = lambda d: " / ".join(f"{a:.1f}" for a in acc[d])
  gap = max(abs(a - b) for a, b in zip(acc["float32"], acc["bfloat16"]))
  assert_in_readme(f"per seed {per_seed('float32')} against {per_seed('bfloat16')}, at most "
                   f"{gap:.1f} points apart")
  assert gap < 2  # the acceptance: within 2 points


def test_auto_attention_figures():
  from models.attention import transformer  # pylint: disable=import-outside-toplevel
  bench = load("docs/auto_attention_cpu.json")
  assert bench["measured_crossover"] == transformer.CPU_BLOCKED_FROM == 4096
  ratio = bench["dense_over_blocked"]
  assert_in_readme(f"dense takes {ratio['4096']:.2f}x blocked's time at 4096 and "
                   f"{ratio['8192']:.2f}x at 8192")
  short = [ratio[n] for n in ("256", "512", "1024", "2048")]
  assert_in_readme(f"({min(short):.2f}-{max(short):.2f}x)")
  assert max(bench["auto_over_fastest"].values()) < 1.10
