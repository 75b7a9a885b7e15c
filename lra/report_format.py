"""Renders the report's tables as Markdown, LaTeX (tabular) or CSV.

A table is built once: display cells (with a bold flag for the best-per-column mark) for
Markdown and LaTeX, and machine-readable records (numbers, marks in their own columns) for CSV.
CSV output is one block per table: `# title` and `# note` lines, the column names, the rows,
then an empty line.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field


@dataclass
class Cell:
  text: str
  bold: bool = False  # the best-per-column mark; covers `text` only
  suffix: str = ""    # shown after `text`, never bold (e.g. the published figure beside ours)


@dataclass
class Table:
  title: str
  header: list[str]
  rows: list[list[Cell]]
  notes: list[str] = field(default_factory=list)
  records: list[dict] = field(default_factory=list)


def render(header: list[str], tables: list[Table], fmt: str) -> str:
  return {"markdown": markdown, "latex": latex, "csv": to_csv}[fmt](header, tables)


def markdown(header: list[str], tables: list[Table]) -> str:
  out = ["# Long Range Arena report", ""] + [line + "  " for line in header]
  for table in tables:
    out += ["", f"## {table.title}", "", "| " + " | ".join(table.header) + " |",
            "|" + "---|" * len(table.header)]
    for row in table.rows:
      out.append("| " + " | ".join((f"**{c.text}**" if c.bold else c.text) + c.suffix
                                   for c in row) + " |")
    out += [""] + [note + "  " for note in table.notes]
  return "\n".join(out) + "\n"


# Characters of the cells -> LaTeX, one character at a time (so no escape is escaped twice).
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
          "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
          "±": r"$\pm$", "−": "-", "–": "--", "†": r"$^\dagger$", "‡": r"$^\ddagger$",
          "×": r"$\times$", "≥": r"$\geq$", "`": ""}


def latex_escape(text: str) -> str:
  return "".join(_LATEX.get(c, c) for c in text.replace(">=", "≥"))


def latex(header: list[str], tables: list[Table]) -> str:
  out = ["% Long Range Arena report (python -m lra.report)"]
  out += [latex_escape(line) + "\n" for line in header]
  for table in tables:
    out += [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(table.title)}}}",
            r"\begin{tabular}{l" + "c" * (len(table.header) - 1) + "}", r"\hline",
            " & ".join(latex_escape(h) for h in table.header) + r" \\", r"\hline"]
    for row in table.rows:
      out.append(" & ".join((rf"\textbf{{{latex_escape(c.text)}}}" if c.bold
                             else latex_escape(c.text)) + latex_escape(c.suffix)
                            for c in row) + r" \\")
    out += [r"\hline", r"\end{tabular}"]
    if table.notes:
      out.append(r"\par\footnotesize " + r" \par ".join(latex_escape(n) for n in table.notes))
    out += [r"\end{table}", ""]
  return "\n".join(out) + "\n"


def to_csv(header: list[str], tables: list[Table]) -> str:
  buffer = io.StringIO()
  for line in header:
    buffer.write(f"# {line}\n")
  buffer.write("\n")
  for table in tables:
    buffer.write(f"# {table.title}\n")
    for note in table.notes:
      buffer.write(f"# {note}\n")
    columns = list(dict.fromkeys(key for record in table.records for key in record))
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(table.records)
    buffer.write("\n")
  return buffer.getvalue()
