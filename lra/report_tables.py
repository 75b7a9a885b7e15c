"""The report's tables: built once as cells (plus machine-readable records), rendered as
Markdown, LaTeX or CSV by `lra.report_format`."""
from __future__ import annotations

import copy
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lra.report_format import Cell, Table, render  # pylint: disable=unused-import  (re-exported)

from lra.tasks import TASKS as _TASK_MODULES

TASKS = tuple(_TASK_MODULES)  # LRA Table 1 column order
TASK_NAMES = {"listops": "ListOps", "text": "Text", "retrieval": "Retrieval", "image": "Image",
              "pathfinder": "Pathfinder", "pathx": "Path-X"}
PUBLISHED_CSV = Path(__file__).parent / "data" / "lra_accuracy_published.csv"
PUBLISHED_COLUMNS = {"path_x": "pathx"}  # the csv's column names that differ from our tasks
FAIRNESS_TOLERANCE = 0.10  # LRA: parameter counts comparable; we mark > 10% from Transformer
MISSING = "–"
INCOMPLETE = "†"
UNFAIR = "‡"


@dataclass
class Accuracy:
  """Test accuracies (percent) of one (variant, task) cell, one per seed."""
  values: list[float]
  seeds: list = field(default_factory=list)

  @property
  def n(self) -> int:
    return len(self.values)

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  @property
  def std(self) -> float | None:
    return float(np.std(self.values, ddof=1)) if self.n > 1 else None  # sample std

  def text(self) -> str:
    spread = f" ± {self.std:.2f}" if self.std is not None else ""
    return f"{self.mean:.2f}{spread} ({self.n})"


def accuracy_cells(groups: dict, select: str) -> dict[tuple[str, str], Accuracy]:
  return {key: Accuracy([100 * run.accuracy(select) for run in runs], [run.seed for run in runs])
          for key, runs in groups.items()}


def load_published(path: Path = PUBLISHED_CSV) -> dict[str, dict]:
  """model -> {task: float | 'FAIL' | None, 'avg': ..., 'source': str}."""
  table = {}
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      entry = {"source": row["source"]}
      for column, value in row.items():
        if column in ("model", "source"):
          continue
        value = value.strip()
        entry[PUBLISHED_COLUMNS.get(column, column)] = (
            None if not value else "FAIL" if value.upper() == "FAIL" else float(value))
      table[row["model"]] = entry
  return table


def _tasks_present(accuracy: dict) -> list[str]:
  return [t for t in TASKS if any(task == t for _, task in accuracy)]


def row_averages(accuracy: dict) -> dict[str, tuple[float, list[str]]]:
  """label -> (mean of the row's cell means, the tasks it covers)."""
  out = {}
  for label in {label for label, _ in accuracy}:
    tasks = [t for t in TASKS if (label, t) in accuracy]
    out[label] = (float(np.mean([accuracy[(label, t)].mean for t in tasks])), tasks)
  return out


def row_order(accuracy: dict) -> list[str]:
  """Transformer first (the reference), then the others by Avg, highest first."""
  averages = row_averages(accuracy)
  return sorted(averages, key=lambda label: (not label.startswith("transformer"),
                                             -averages[label][0], label))


def _r(value: float) -> float:
  """CSV numbers: 6 decimals (accuracy in %, so far below the test sets' resolution)."""
  return round(float(value), 6)


# Our name -> the published row it is compared with, where the two differ: configs/s4d_*.py are
# the S4 repository's LRA configs with `init: legs`, i.e. the S4D paper's S4D-LegS row;
# configs/luna_*.py are Luna-256 (packed length 256), the paper's headline LRA row.
PUBLISHED_ROW = {"s4d": "s4d_legs", "luna": "luna_256"}


def _published_attention(label: str) -> str:
  name = label.split(" (")[0]  # "transformer (blocked)" is the same maths as "transformer"
  return PUBLISHED_ROW.get(name, name)


def _fmt_published(value) -> str:
  return MISSING if value is None else value if value == "FAIL" else f"{value:.2f}"


def table1(accuracy: dict, published: bool = False) -> Table:
  """LRA Table 1: test accuracy per task, mean ± sample std over seeds (seed count)."""
  present = _tasks_present(accuracy)
  averages = row_averages(accuracy)
  labels = row_order(accuracy)
  complete = {label for label in labels if averages[label][1] == present}
  best = {t: max(accuracy[(label, t)].mean for label in labels if (label, t) in accuracy)
          for t in present}
  best_avg = max((averages[label][0] for label in complete), default=None)
  pub = load_published() if published else {}
  header = ["Model"] + [TASK_NAMES[t] for t in TASKS] + ["Avg"]
  rows, records, notes = [], [], []
  for label in labels:
    entry = pub.get(_published_attention(label))
    cells, record = [Cell(label)], {"model": label, "published_only": 0}
    for t in TASKS:
      acc = accuracy.get((label, t))
      text, suffix = acc.text() if acc else MISSING, ""
      is_best = bool(acc) and acc.mean == best[t]
      record.update({f"{t}_mean": _r(acc.mean) if acc else "",
                     f"{t}_std": _r(acc.std) if acc and acc.std is not None else "",
                     f"{t}_seeds": acc.n if acc else 0,
                     f"{t}_best": "*" if is_best else ""})
      if published:
        value = entry.get(t) if entry else None
        diff = acc.mean - value if acc and isinstance(value, float) else None
        suffix = f" / {_fmt_published(value)}" + (f" ({diff:+.2f})" if diff is not None else "")
        record.update({f"{t}_published": "" if value is None else value,
                       f"{t}_diff": "" if diff is None else _r(diff)})
      cells.append(Cell(text, bold=is_best, suffix=suffix))
    avg, tasks = averages[label]
    is_complete = label in complete
    text, suffix = f"{avg:.2f}" + ("" if is_complete else INCOMPLETE), ""
    if not is_complete:
      notes.append(f"{INCOMPLETE} {label}: Avg over {', '.join(TASK_NAMES[t] for t in tasks)} "
                   f"only (no {', '.join(TASK_NAMES[t] for t in present if t not in tasks)})")
    record.update({"avg": _r(avg), "avg_tasks": ";".join(tasks), "avg_complete": int(is_complete),
                   "avg_best": "*" if is_complete and avg == best_avg else ""})
    if published:
      value = entry.get("avg") if entry else None
      published_tasks = [t for t in TASKS if entry and isinstance(entry.get(t), float)]
      diff = avg - value if isinstance(value, float) and tasks == published_tasks else None
      suffix = f" / {_fmt_published(value)}" + (f" ({diff:+.2f})" if diff is not None else "")
      record.update({"avg_published": "" if value is None else value,
                     "avg_diff": "" if diff is None else _r(diff)})
    cells.append(Cell(text, bold=is_complete and avg == best_avg, suffix=suffix))
    rows.append(cells)
    records.append(record)
  if published:
    ours = {_published_attention(label) for label in labels}
    for model, entry in pub.items():
      if model in ours:
        continue
      rows.append([Cell(f"{model} (published only)")]
                  + [Cell(f"{MISSING} / {_fmt_published(entry.get(t))}") for t in TASKS]
                  + [Cell(f"{MISSING} / {_fmt_published(entry.get('avg'))}")])
      record = {"model": model, "published_only": 1}
      for t in TASKS + ("avg",):
        record[f"{t}_published"] = "" if entry.get(t) is None else entry[t]
      records.append(record)
  title = "Table 1: test accuracy (%), mean ± sample std over seeds (number of seeds)"
  notes.insert(0, f"Accuracy in %; {MISSING} = no finished run. Best per column in bold "
               "(CSV: `*` in the *_best columns); Avg's best among the rows covering every task "
               f"run here ({', '.join(TASK_NAMES[t] for t in present)}). Rows: Transformer "
               "first, then by Avg, highest first.")
  if published:
    notes.insert(1, "Cells read `ours / published (ours − published)`. Published figures are at "
                 "the papers' scale (full LRA configs and data, TPU); ours are at the scale of "
                 "these runs' configs, so differences compare different settings. Sources: "
                 "lra/data/README.md. An Avg difference is given only where the row covers the "
                 "tasks of the published average.")
  return Table(title, header, rows, notes, records)


def parameters_table(groups: dict) -> Table:
  """The LRA paper's fairness rule: parameter counts per (variant, task), marked where they
  differ from the Transformer's count on the same task by more than 10%."""
  counts = {key: sorted({int(run.results["parameters"]) for run in runs})
            for key, runs in groups.items()}
  present = [t for t in TASKS if any(task == t for _, task in counts)]
  labels = sorted({label for label, _ in counts},
                  key=lambda label: (label != "transformer", not label.startswith("transformer"),
                                     label))
  reference = {}
  for t in present:
    ref = [label for label in labels if (label, t) in counts and label.startswith("transformer")]
    if ref:
      reference[t] = counts[(ref[0], t)][0]
  rows, records, marked = [], [], False
  for label in labels:
    cells, record = [Cell(label)], {"model": label}
    for t in present:
      values = counts.get((label, t))
      if not values:
        cells.append(Cell(MISSING))
        record.update({f"{t}_parameters": "", f"{t}_vs_transformer": "", f"{t}_unfair": ""})
        continue
      text = "/".join(f"{v:,}" for v in values)  # one value unless seeds disagree
      ratio = values[0] / reference[t] - 1 if t in reference else None
      unfair = ratio is not None and abs(ratio) > FAIRNESS_TOLERANCE
      marked |= unfair
      text += f" ({ratio:+.1%})" if ratio is not None else ""
      cells.append(Cell(text + (f" {UNFAIR}" if unfair else "")))
      record.update({f"{t}_parameters": values[0],
                     f"{t}_vs_transformer": "" if ratio is None else _r(ratio),
                     f"{t}_unfair": "*" if unfair else ""})
    rows.append(cells)
    records.append(record)
  notes = [f"In brackets: difference from the Transformer's count on the same task. {UNFAIR}: "
           f"more than {FAIRNESS_TOLERANCE:.0%} away (the LRA paper compares models of "
           "comparable size)." + ("" if marked else " No cell is marked.")]
  missing_ref = [TASK_NAMES[t] for t in present if t not in reference]
  if missing_ref:
    notes.append(f"No Transformer run for {', '.join(missing_ref)}: nothing to compare with.")
  return Table("Parameters per model and task (fairness)", ["Model"]
               + [TASK_NAMES[t] for t in present], rows, notes, records)


def majority_table(groups: dict) -> Table:
  """The test set's majority-class rate per task: the accuracy of always guessing it."""
  present = [t for t in TASKS if any(task == t for _, task in groups)]
  cells, examples, record = [Cell("majority-class rate (%)")], [Cell("test examples")], {}
  for t in present:
    runs = [run for (_, task), members in groups.items() if task == t for run in members]
    rates = sorted({run.results.get("test_majority_class_rate") for run in runs} - {None})
    sizes = sorted({run.results["splits"]["test"].get("examples") for run in runs} - {None})
    cells.append(Cell(MISSING if not rates else f"{100 * rates[0]:.2f}" if len(rates) == 1
                      else f"{100 * rates[0]:.2f}–{100 * rates[-1]:.2f}"))
    examples.append(Cell("/".join(str(s) for s in sizes) or MISSING))
    record.update({f"{t}_majority_rate": rates[0] if len(rates) == 1 else "",
                   f"{t}_test_examples": sizes[0] if len(sizes) == 1 else ""})
  return Table("Chance level: test majority-class rate per task",
               [""] + [TASK_NAMES[t] for t in present], [cells, examples],
               ["A range or several sizes mean the runs of a task used different test sets."],
               [record])


def load_bench(path: str) -> list[dict]:
  """The rows of an lra.benchmark JSON, ratios recomputed (older files gain the new ones)."""
  from lra import benchmark  # pylint: disable=import-outside-toplevel
  try:
    rows = json.loads(Path(path).read_text())
  except (OSError, json.JSONDecodeError) as e:
    from lra.report import ReportError  # pylint: disable=import-outside-toplevel
    raise ReportError(f"--bench={path}: not readable JSON ({e})") from e
  if not isinstance(rows, list) or not all(isinstance(r, dict) and "length" in r
                                           and "attention" in r and "status" in r for r in rows):
    from lra.report import ReportError  # pylint: disable=import-outside-toplevel
    raise ReportError(f"--bench={path}: expected a list of lra.benchmark rows "
                      "(attention, length, status, ...)")
  return benchmark.add_ratios(copy.deepcopy(rows))


def _num(value, spec: str, suffix: str = "") -> str:
  return MISSING if value is None else format(value, spec) + suffix


def table2(rows: list[dict]) -> list[Table]:
  """LRA Table 2 per length: steps/s and memory with ratios to the dense Transformer, and the
  speed-up against the fastest exact attention and the FLOPs per step, which LRA lacks."""
  from lra.benchmark import label  # pylint: disable=import-outside-toplevel
  tables = []
  header = ["Model", "steps/s", "speed-up vs Transformer", "memory (MiB)",
            "memory vs Transformer", "speed-up vs fastest exact", "GFLOP per step", "GFLOP/s"]
  for length in sorted({r["length"] for r in rows}):
    at = sorted((r for r in rows if r["length"] == length),
                key=lambda r: (not label(r).startswith("transformer"), label(r)))
    fastest = next((r["fastest_exact_implementation"] for r in at
                    if r.get("fastest_exact_implementation")), None)
    cells, records = [], []
    for r in at:
      ok = r["status"] == "ok"
      loops = ">=" if r.get("flops_while_loops") else ""
      gflop = r.get("flops") / 1e9 if ok and r.get("flops") else None
      memory = r.get("memory_bytes") / 2**20 if ok and r.get("memory_bytes") else None
      cells.append([Cell(label(r)),
                    Cell(f"{1 / r['step_time_s']:.2f}" if ok else r["status"].split(":")[0]),
                    Cell(_num(r.get("speedup_vs_transformer"), ".2f", "x")),
                    Cell(_num(memory, ".1f")),
                    Cell(_num(r.get("memory_vs_transformer"), ".2f", "x")),
                    Cell(_num(r.get("speedup_vs_fastest_exact"), ".2f", "x")),
                    Cell(loops + _num(gflop, ".3g") if gflop else MISSING),
                    Cell(loops + _num(r.get("gflops_per_s"), ".2f") if r.get("gflops_per_s")
                         else MISSING)])
      records.append({"length": length, "model": label(r), "status": r["status"],
                      **{k: ("" if r.get(k) is None else r[k]) for k in (
                          "step_time_s", "speedup_vs_transformer", "memory_bytes",
                          "memory_vs_transformer", "speedup_vs_fastest_exact",
                          "fastest_exact_implementation", "flops", "flops_while_loops",
                          "gflops_per_s", "batch")}})
    batch = sorted({r.get("batch") for r in at} - {None})
    notes = [f"Train step (forward, backward, Adam update), batch {'/'.join(map(str, batch))}. "
             "Ratios to the dense Transformer as LRA Table 2; speed-up vs fastest exact: against "
             f"the quickest `transformer` implementation measured here at this length "
             f"({fastest or 'none measured'}). FLOPs from XLA's cost analysis of the compiled "
             "step; >= where the step has while loops, whose bodies XLA counts once."]
    tables.append(Table(f"Table 2 at length {length}: efficiency on this machine", header, cells,
                        notes, records))
  return tables


def header(runs_dir, runs, unfinished, select, published, bench) -> list[str]:
  which = ("final test accuracy (splits.test.accuracy)" if select == "final" else
           "test accuracy at the best validation step (test_at_best_validation.accuracy)")
  lines = [f"Runs: {len(runs)} finished under {runs_dir}; accuracy = {which}."]
  if unfinished:
    lines.append(f"{len(unfinished)} run(s) without results.json (unfinished or failed), not "
                 f"in the tables: {'; '.join(unfinished)}.")
  if published:
    lines.append("Published numbers are at the papers' scale (full LRA configurations and data, "
                 "TPU training), not at the scale of these runs.")
  if bench:
    lines.append(f"Efficiency from {bench} (lra.benchmark on this machine).")
  return lines
