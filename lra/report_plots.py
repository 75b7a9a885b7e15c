"""The report's plots: LRA Figure 3 (speed, accuracy, memory) and validation learning curves."""
from __future__ import annotations

import json
import sys

import numpy as np

from lra.report_tables import TASK_NAMES, TASKS, row_averages


def _pyplot():
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _colors(plt, labels) -> dict:
  """One colour per variant, the same in both plots (tab20: distinct for up to 20 variants)."""
  labels = sorted(set(labels))
  cmap = plt.get_cmap("tab20" if len(labels) > 10 else "tab10")
  return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def figure3(accuracy: dict, bench_rows: list[dict], path: str, length: int = 0) -> None:
  """Tay et al. 2021, Figure 3: steps/s (x) against the LRA average (y), marker area
  proportional to memory; one labelled point per variant with both runs and a benchmark row."""
  from lra.benchmark import label  # pylint: disable=import-outside-toplevel
  from lra.report import ReportError  # pylint: disable=import-outside-toplevel
  lengths = sorted({r["length"] for r in bench_rows})
  length = length or (lengths[-1] if lengths else 0)
  if length not in lengths:
    raise ReportError(f"--bench_length={length}: the benchmark has lengths {lengths}")
  speed = {label(r): r for r in bench_rows if r["length"] == length and r["status"] == "ok"}
  averages = row_averages(accuracy)
  present = [t for t in TASKS if any(task == t for _, task in accuracy)]
  points = [(name, 1 / speed[name]["step_time_s"], averages[name][0],
             speed[name].get("memory_bytes"), averages[name][1] == present)
            for name in sorted(averages) if name in speed]
  left_out = sorted(set(averages) ^ set(speed))
  if left_out:
    print(f"report: Figure 3 leaves out {', '.join(left_out)} (not both in the runs and among "
          f"the benchmark's measured rows at length {length})", file=sys.stderr)
  if not points:
    raise ReportError(f"Figure 3: no variant has both runs and an ok benchmark row at length "
                      f"{length}")
  memories = [m for *_, m, _ in points if m]
  biggest = max(memories) if memories else 1
  plt = _pyplot()
  colors = _colors(plt, averages)
  fig, ax = plt.subplots(figsize=(7, 5))
  for name, steps_per_s, avg, memory, complete in points:
    area = 60 + 1200 * (memory / biggest if memory else 0.1)
    ax.scatter(steps_per_s, avg, s=area, alpha=0.6, edgecolors=colors[name], linewidths=1.5,
               facecolors=colors[name] if complete else "none")
    ax.annotate(name + ("" if complete else " †"), (steps_per_s, avg), fontsize=8,
                xytext=(6, 6), textcoords="offset points")
  ax.set(xlabel=f"speed (train steps/s at length {length}, this machine)",
         ylabel=f"LRA average test accuracy (%) over {', '.join(TASK_NAMES[t] for t in present)}",
         title="Speed, accuracy and memory (LRA Figure 3)\nmarker area: memory; † hollow: "
               "Avg over fewer tasks")
  ax.grid(True, alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def validation_curve(run) -> dict[int, float]:
  """step -> validation accuracy (percent) from a run's metrics.jsonl."""
  path = run.path / "metrics.jsonl"
  if not path.exists():
    return {}
  curve = {}
  for number, line in enumerate(path.read_text().splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      from lra.report import ReportError  # pylint: disable=import-outside-toplevel
      raise ReportError(f"{path}:{number}: not JSON ({e})") from e
    if record.get("split") == "validation" and "accuracy" in record:
      curve[int(record["step"])] = 100 * float(record["accuracy"])
  return curve


def learning_curves(groups: dict, path: str) -> None:
  """One panel per task, one line per variant: validation accuracy against step, the mean over
  seeds at each step (with the seeds' min-max as a band)."""
  tasks = [t for t in TASKS if any(task == t for _, task in groups)]
  plt = _pyplot()
  colors = _colors(plt, [label for label, _ in groups])
  fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
  without = []
  for ax, task in zip(axes[0], tasks):
    for (label, t), runs in sorted(groups.items()):
      if t != task:
        continue
      curves = [validation_curve(run) for run in runs]
      without += [str(run.path) for run, curve in zip(runs, curves) if not curve]
      steps = sorted({s for curve in curves for s in curve})
      if not steps:
        continue
      values = [[curve[s] for curve in curves if s in curve] for s in steps]
      mean = [np.mean(v) for v in values]
      ax.plot(steps, mean, marker=".", color=colors[label], label=f"{label} ({len(runs)})")
      if len(runs) > 1:
        ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values],
                        color=colors[label], alpha=0.15)
    ax.set(title=TASK_NAMES[task], xlabel="train step", ylabel="validation accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, title="variant (seeds)", title_fontsize=7)
  if without:
    print(f"report: learning curves: no validation records in metrics.jsonl of "
          f"{', '.join(without)}", file=sys.stderr)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
