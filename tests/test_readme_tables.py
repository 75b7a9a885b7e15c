"""The README's efficiency tables are the benchmark's own rendering of committed JSON files.

Each table follows a marker naming its source, `<!-- benchmark-table: docs/x.json steps,memory -->`
or `<!-- torch-comparison: docs/torch.json docs/bench.json -->`; the table lines under it must
equal what `lra.benchmark.markdown` (or `benchmarks/torch_attention.comparison`) renders from
those files today.
"""
import json
import re
from pathlib import Path

from benchmarks import torch_attention
from lra import benchmark

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- (benchmark-table|torch-comparison): (.+?) -->")


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


def rendered(kind: str, args: list[str]) -> list[str]:
  if kind == "benchmark-table":
    path, columns = args
    return table_lines(benchmark.markdown(load(path), tuple(columns.split(","))))
  torch_rows, bench_rows = args
  return table_lines(torch_attention.comparison(load(torch_rows), load(bench_rows)))


def test_every_marked_readme_table_equals_its_rendering_from_the_committed_json():
  found = marked_tables()
  assert len(found) >= 4, "the efficiency section lost its table markers"
  for kind, args, table, line in found:
    assert table, f"README line {line}: no table under the marker"
    assert table == rendered(kind, args), f"README line {line}: table differs from {args}"


def test_committed_benchmark_files_carry_cpu_time_and_page_faults():
  paths = {arg for kind, args, _, _ in marked_tables() for arg in args if arg.endswith(".json")}
  for path in paths:
    for row in load(path):
      if row.get("status", "ok") == "ok":
        for key in ("user_s_per_step", "sys_s_per_step", "page_faults_per_step"):
          assert row.get(key) is not None and row[key] >= 0, (path, key, row.get("attention"))
