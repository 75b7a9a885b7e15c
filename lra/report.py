"""Survey-style tables and plots from a folder of runs: LRA Table 1, Table 2 and Figure 3.

    python -m lra.report --runs=runs/sweep [--format=markdown|latex|csv] [--published] \
        [--select=final|best_validation] [--bench=bench.json] [--bench_length=4096] \
        [--plot=fig3.png] [--curves=curves.png] [--out=report.md]

Every `results.json` under --runs (searched recursively) is one finished run; a folder with a
`config.json` and no `results.json`, or a run an lra.sweep index (`sweep.jsonl`) lists as not
done, is an unfinished or failed run, named on stderr and in the output's header. Runs are
grouped per (variant, task): they must share their config except the seed (and the data/cache
folders); a difference is an error naming both runs.

Tables: accuracy (Tay et al. 2021, Table 1 layout; `--published` adds the papers' figures and
our difference), parameter counts (the LRA paper's fairness rule: comparable counts), the test
majority-class rate per task (chance level), and with --bench the efficiency table (LRA Table 2,
plus the speed-up against the fastest exact attention and the FLOPs per step). Plots: LRA
Figure 3 (speed against average accuracy, memory as marker size) and learning curves.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command line's flags; defined when run as a program, so that importing this module
  (tests, lra.report) defines none."""
  flags.DEFINE_string("runs", None, "Folder searched recursively for run directories.")
  flags.DEFINE_enum("format", "markdown", ["markdown", "latex", "csv"], "Table format.")
  flags.DEFINE_bool("published", False, "Published LRA figures beside ours, with differences.")
  flags.DEFINE_enum("select", "final", ["final", "best_validation"],
                    "Which test accuracy: after the last step (splits.test.accuracy), or at the "
                    "best validation step (test_at_best_validation.accuracy).")
  flags.DEFINE_string("bench", "", "An lra.benchmark JSON: Table 2 and Figure 3's speed/memory.")
  flags.DEFINE_integer("bench_length", 0, "Figure 3's sequence length (0 = largest in --bench).")
  flags.DEFINE_string("plot", "", "PNG path for LRA Figure 3 (needs --bench).")
  flags.DEFINE_string("curves", "", "PNG path for the validation learning curves.")
  flags.DEFINE_string("out", "", "Output file for the tables ('' = stdout).")
  flags.DEFINE_string("collect", "", "Also write the runs' results.json and config.json into "
                      "this one JSON file, which --runs accepts in place of a folder (tables "
                      "from committed results; no checkpoints or curves).")



# Fields that may differ between the seeds of one cell: the seed, and where data lives.
IGNORED_CONFIG_FIELDS = ("seed", "data_dir", "cache_dir")


class ReportError(ValueError):
  """A runs folder the report cannot summarise faithfully; the message names the run(s)."""


@dataclass
class Run:
  path: Path
  results: dict
  config: dict

  @property
  def task(self) -> str:
    return self.results["task"]

  @property
  def attention(self) -> str:
    return self.results["attention"]

  @property
  def label(self) -> str:
    """The row name: the variant, or `transformer (blocked)` / `(xla)` for a run that chose a
    non-dense kernel. "auto" (the module's default, the fastest exact kernel per backend and
    length) is the plain variant's row: the maths is the same exact attention, and that row is
    the one published numbers are matched to."""
    from lra.benchmark import label  # pylint: disable=import-outside-toplevel
    kwargs = dict(self.config.get("model", {}).get("attention_kwargs") or {})
    if kwargs.get("implementation") == "auto":
      kwargs["implementation"] = "dense"
    return label({"attention": self.attention, "kwargs": kwargs})

  @property
  def seed(self):
    return self.config.get("seed")

  def accuracy(self, select: str) -> float:
    """Test accuracy in [0, 1]: final, or at the best validation step."""
    if select == "final":
      return float(self.results["splits"]["test"]["accuracy"])
    best = self.results.get("test_at_best_validation")
    if not best or best.get("accuracy") is None:
      raise ReportError(f"{self.path}: results.json has no test_at_best_validation.accuracy "
                        "(no best checkpoint was saved); use --select=final")
    return float(best["accuracy"])


def _read_json(path: Path) -> dict:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ReportError(f"{path}: not readable JSON ({e})") from e


def find_runs(root: str | Path) -> tuple[list[Run], list[str]]:
  """Finished runs (a results.json) and the unfinished ones, described: a folder with a
  config.json and no results.json, or a run that an lra.sweep index (sweep.jsonl) lists as not
  done and that has no results.json (e.g. one that failed before writing its config)."""
  root = Path(root)
  if root.is_file() and root.suffix == ".json":
    return load_collected(root)
  if not root.is_dir():
    raise ReportError(f"--runs={root}: not a folder (or a JSON file written by --collect)")
  runs = []
  for path in sorted(root.rglob("results.json")):
    results = _read_json(path)
    for key in ("task", "attention", "splits", "parameters"):
      if key not in results:
        raise ReportError(f"{path}: no {key!r}; is this a results.json written by train.py?")
    config_path = path.parent / "config.json"
    config = _read_json(config_path) if config_path.exists() else results.get("config")
    if not isinstance(config, dict):
      raise ReportError(f"{path.parent}: neither config.json nor results.json's config")
    runs.append(Run(path.parent, results, config))
  finished = {run.path for run in runs}
  unfinished = {p.parent: "no results.json" for p in root.rglob("config.json")
                if p.parent not in finished
                and not any(parent in finished for parent in p.parents)}
  from lra.sweep import Index  # pylint: disable=import-outside-toplevel
  for index in root.rglob("sweep.jsonl"):
    for name, record in Index(index.parent).states().items():
      run_dir = index.parent / name  # lra.sweep: <workdir>/<attention>_<task>_seed<seed>
      if run_dir not in finished and record.get("state") != "done":
        reason = record.get("reason")
        unfinished[run_dir] = f"sweep: {record.get('state')}" + (f", {reason}" if reason else "")
  return runs, [f"{path} ({why})" for path, why in sorted(unfinished.items())]


def collected(root: str | Path, runs: list[Run], unfinished: list[str]) -> dict:
  """The runs' results and configs in one JSON-able dict (`--collect`); paths relative to a
  runs folder (runs read from a collected file keep theirs)."""
  relative = (lambda path: path.relative_to(root)) if Path(root).is_dir() else (lambda p: p)
  return {"runs": [{"path": str(relative(run.path)), "results": run.results,
                    "config": run.config} for run in runs],
          "unfinished": unfinished}


def load_collected(path: Path) -> tuple[list[Run], list[str]]:
  """The runs of a `--collect` file, as `find_runs` returns them from a folder."""
  data = _read_json(path)
  if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
    raise ReportError(f"--runs={path}: not a file written by --collect (no 'runs' list)")
  runs = []
  for number, entry in enumerate(data["runs"]):
    missing = [k for k in ("path", "results", "config") if k not in entry]
    if missing:
      raise ReportError(f"{path}: runs[{number}] has no {', '.join(missing)}")
    runs.append(Run(Path(entry["path"]), entry["results"], entry["config"]))
  return runs, list(data.get("unfinished", []))


def _config_without_ignored(config: dict) -> dict:
  return {k: v for k, v in config.items() if k not in IGNORED_CONFIG_FIELDS}


def group_runs(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
  """(row label, task) -> runs, sorted by seed. Runs of one cell share their config but for the
  seed; one seed twice (e.g. a copied run) is an error too, as it would count twice."""
  from lra.run_log import differing_fields  # pylint: disable=import-outside-toplevel
  from lra.tasks import TASKS  # pylint: disable=import-outside-toplevel
  groups: dict[tuple[str, str], list[Run]] = {}
  for run in runs:
    if run.task not in TASKS:
      raise ReportError(f"{run.path}: task {run.task!r} is not an LRA task ({', '.join(TASKS)})")
    groups.setdefault((run.label, run.task), []).append(run)
  for (label, task), members in groups.items():
    first = members[0]
    reference = _config_without_ignored(first.config)
    seen = {}
    for run in members:
      differs = sorted(differing_fields(reference, _config_without_ignored(run.config)))
      if differs:
        raise ReportError(
            f"{label}/{task}: runs {first.path} and {run.path} differ in config beyond the "
            f"seed ({', '.join(differs)}); one cell averages seeds of one config only: move "
            "one of them out of --runs")
      if run.seed in seen:
        raise ReportError(f"{label}/{task}: seed {run.seed} twice ({seen[run.seed]} and "
                          f"{run.path}); each seed counts once: move one out of --runs")
      seen[run.seed] = run.path
    members.sort(key=lambda r: (str(type(r.seed)), r.seed))
  return groups


def write_output(text: str, out: str) -> None:
  if out:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(f"wrote {out}", file=sys.stderr)
  else:
    sys.stdout.write(text)


def build_report(runs_dir: str, fmt: str = "markdown", published: bool = False,
                 select: str = "final", bench: str = "", bench_length: int = 0,
                 plot: str = "", curves: str = "", found=None) -> str:
  """The report's text (tables in `fmt`); writes the PNGs asked for. `found`: what
  `find_runs(runs_dir)` returned, when the caller has it already."""
  from lra import report_plots, report_tables  # pylint: disable=import-outside-toplevel
  runs, unfinished = found or find_runs(runs_dir)
  if unfinished:
    print(f"report: {len(unfinished)} run{'' if len(unfinished) == 1 else 's'} without "
          f"results.json (unfinished or failed), not in the tables: {'; '.join(unfinished)}",
          file=sys.stderr)
  if not runs:
    raise ReportError(f"--runs={runs_dir}: no results.json found (unfinished run directories: "
                      f"{len(unfinished)})")
  groups = group_runs(runs)
  accuracy = report_tables.accuracy_cells(groups, select)
  rows = None
  if bench:
    rows = report_tables.load_bench(bench)
  tables = [report_tables.table1(accuracy, published)]
  tables.append(report_tables.parameters_table(groups))
  tables.append(report_tables.majority_table(groups))
  if rows is not None:
    tables.extend(report_tables.table2(rows))
  header = report_tables.header(runs_dir, runs, unfinished, select, published, bench)
  if plot:
    if rows is None:
      raise ReportError("--plot draws LRA Figure 3, whose speed and memory come from --bench; "
                        "give --bench=bench.json (from python -m lra.benchmark)")
    report_plots.figure3(accuracy, rows, plot, bench_length)
  if curves:
    report_plots.learning_curves(groups, curves)
  return report_tables.render(header, tables, fmt)


def main(argv):
  from lra import cli  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}; flags are written --name=value")
  if not FLAGS.runs:
    cli.fail("--runs=DIR is required (a folder of run directories)")
  try:
    found = find_runs(FLAGS.runs)
    text = build_report(FLAGS.runs, FLAGS.format, FLAGS.published, FLAGS.select, FLAGS.bench,
                        FLAGS.bench_length, FLAGS.plot, FLAGS.curves, found=found)
  except ReportError as e:
    cli.fail(e)
  write_output(text, FLAGS.out)
  if FLAGS.collect:
    write_output(json.dumps(collected(FLAGS.runs, *found), indent=1) + "\n", FLAGS.collect)


if __name__ == "__main__":
  define_flags()
  app.run(main)
