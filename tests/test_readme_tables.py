"""The README's tables of figures are renderings of committed results files.

Each table follows a marker naming its source, `<!-- benchmark-table: docs/x.json steps,memory -->`,
`<!-- torch-comparison: docs/torch.json docs/bench.json -->` or
`<!-- report-table: docs/runs.json [--published] [--select=best_validation] -->` (a file written
by `lra.report --collect`) or `<!-- decode-table: docs/benchmark_decode.json -->`; the table
lines under it must equal what `lra.benchmark.markdown`, `benchmarks/torch_attention.comparison`,
one table of `lra.report` or `lra.benchmark_decode.markdown` renders from those files today.
"""
import json
import re
from pathlib import Path

from benchmarks import torch_attention
from lra import benchmark, benchmark_decode
from lra import report

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(
    r"<!-- (benchmark-table|torch-comparison|report-table|decode-table): (.+?) -->")


def table_lines(text: str) -> list[str]:
  return [line for line in text.splitlines() if line.startswith("|")]


def marked_tables() -> list[tuple[str, list[str], list[str], int]]:
  """(kind, arguments, table lines under the marker, marker's line number) per marker."""
  lines = (ROOT / "README.md").read_text().splitlines()
  found = []
  for number, line in enumerate(lines):
    match = MARKER.search(line)
    if not match:
      continue
    rest = lines[number + 1:]
    while rest and not rest[0].strip():
      rest = rest[1:]
    table = []
    for row in rest:
      if not row.startswith("|"):
        break
      table.append(row)
    found.append((match.group(1), match.group(2).split(), table, number + 1))
  return found


def load(path: str) -> list[dict]:
  return json.loads((ROOT / path).read_text())


def table_blocks(text: str) -> list[list[str]]:
  """The runs of consecutive table lines in a rendered text."""
  blocks, current = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      current.append(line)
    elif current:
      blocks.append(current)
      current = []
  return blocks


def report_tables(args: list[str]) -> list[list[str]]:
  path, options = args[0], args[1:]
  unknown = [o for o in options if o not in ("--published", "--select=best_validation")]
  assert not unknown, f"report-table marker: unknown options {unknown}"
  text = report.build_report(str(ROOT / path), "markdown", published="--published" in options,
                             select="best_validation" if "--select=best_validation" in options
                             else "final")
  return table_blocks(text)


def rendered(kind: str, args: list[str]) -> list[str]:
  if kind == "benchmark-table":
    path, columns = args
    return table_lines(benchmark.markdown(load(path), tuple(columns.split(","))))
  if kind == "decode-table":
    return table_lines(benchmark_decode.markdown(load(args[0])))
  torch_rows, bench_rows = args
  return table_lines(torch_attention.comparison(load(torch_rows), load(bench_rows)))


def test_every_marked_readme_table_equals_its_rendering_from_the_committed_json():
  found = marked_tables()
  assert len(found) >= 4, "the efficiency section lost its table markers"
  for kind, args, table, line in found:
    assert table, f"README line {line}: no table under the marker"
    if kind == "report-table":
      assert table in report_tables(args), f"README line {line}: no such table from {args}"
    else:
      assert table == rendered(kind, args), f"README line {line}: table differs from {args}"


def test_committed_benchmark_files_carry_cpu_time_and_page_faults():
  paths = {arg for kind, args, _, _ in marked_tables()
           if kind not in ("report-table", "decode-table")  # no train steps there
           for arg in args if arg.endswith(".json")}
  for path in paths:
    for row in load(path):
      if row.get("status", "ok") == "ok":
        for key in ("user_s_per_step", "sys_s_per_step", "page_faults_per_step"):
          assert row.get(key) is not None and row[key] >= 0, (path, key, row.get("attention"))


def test_committed_benchmark_markdown_files_equal_their_json():
  for name in ("benchmark", "benchmark_attention_only"):
    text = (ROOT / "docs" / f"{name}.md").read_text()
    assert text == benchmark.markdown(load(f"docs/{name}.json")), f"docs/{name}.md is stale"


ZOO_MARKER = "<!-- zoo-table: every registered mixer; support columns from the registry -->"


def test_readme_zoo_table_lists_every_mixer_with_the_registrys_support_flags():
  """The zoo table (README "Attention variants") has one row per registered name, and its
  causal / cross / RoPE / MQA / score-bias columns say what the registry says (a variant that
  gains or loses an option cannot leave the table behind)."""
  from models.attention import registry  # pylint: disable=import-outside-toplevel
  lines = (ROOT / "README.md").read_text().splitlines()
  assert ZOO_MARKER in lines, "README has no zoo table marker"
  rest = lines[lines.index(ZOO_MARKER) + 1:]
  while rest and not rest[0].strip():
    rest = rest[1:]
  header = [c.strip() for c in rest[0].strip("|").split("|")]
  assert header[-5:] == ["causal", "cross", "RoPE", "MQA/GQA", "score bias"], header
  rows = {}
  for row in rest[2:]:
    if not row.startswith("|"):
      break
    cells = [c.strip() for c in row.strip("|").split("|")]
    rows[cells[0].strip("`")] = cells
  assert sorted(rows) == registry.names()
  yes = lambda flag: "yes" if flag else "no"
  for name, cells in rows.items():
    spec = registry.get(name)
    causal = ("approximately" if not spec.causal_exact else "yes") if spec.supports_causal \
        else "no"
    expected = [causal, yes(spec.supports_cross), yes(spec.rope), yes(spec.kv_heads),
                yes(spec.score_bias)]
    assert cells[-5:] == expected, (name, cells[-5:], expected)
    assert all(cells[:-5]), f"zoo table row {name!r} has an empty cell"
