"""ListOps (Nangia & Bowman 2018) as in LRA: generator, release-format TSV writer and reader.

Generated data is written in the LRA release format (`basic_{train,val,test}.tsv`, header
`Source\tTarget`, binarised expressions with parentheses) and read back by the same reader
that reads the release, so both share one path. The generator reproduces the distribution of
the original `make_data.py` (see lra/data/lra_tasks.md): a node above `max_depth`
is an operator with probability `operator_prob` (0.25), an operator takes
randint(2, max_args) arguments, a tree is kept when min_length < length < max_length
(length = values + 2 per operator), samples are de-duplicated, then split train/val/test.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import multiprocessing
import os
import random
import statistics
from pathlib import Path

import ml_collections
import numpy as np

from lra import release
from lra.batches import Split, TaskData, pad_rows

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
# Token ids: 0 is padding; then the original vocabulary (digits, operators, "X" for "]").
VOCAB = ("<pad>",) + tuple(str(d) for d in range(10)) + OPERATORS + ("X",)
TOKEN_IDS = {token: i for i, token in enumerate(VOCAB)}
NUM_CLASSES = 10
SPLIT_FILES = {"train": "basic_train.tsv", "validation": "basic_val.tsv", "test": "basic_test.tsv"}
CHUNK = 256  # accepted samples per generator work unit


# ----------------------------------------------------------------------------- generator
def apply_operator(op: str, args: list[int]) -> int:
  if op == "[MIN":
    return min(args)
  if op == "[MAX":
    return max(args)
  if op == "[MED":
    return int(statistics.median(args))  # int(np.median(...)) in the original: truncates
  if op == "[SM":
    return sum(args) % 10
  raise ValueError(f"unknown ListOps operator {op!r}")


class _TooLong(Exception):
  pass


def _tree(rng: random.Random, depth: int, params: dict, budget: list[int]):
  """Returns (source string, value); `budget[0]` counts remaining length (aborts when < 0)."""
  if depth < params["max_depth"] and rng.random() < params["operator_prob"]:
    n_args = rng.randint(2, params["max_args"])
    budget[0] -= 2
    args = [_tree(rng, depth + 1, params, budget) for _ in range(n_args)]
    op = rng.choice(params["operators"])
    # Binarised form of the original: ((( op a1 ) a2 ) ... an ) ] )
    parts = ["( " * (n_args + 1) + op + " " + args[0][0] + " )"]
    parts += [arg[0] + " )" for arg in args[1:]]
    return " ".join(parts) + " ] )", apply_operator(op, [a[1] for a in args])
  budget[0] -= 1
  if budget[0] < 0:
    raise _TooLong
  value = rng.randint(0, 9)
  return str(value), value


def _generate_chunk(args) -> list[tuple[str, int]]:
  params, chunk_index = args
  rng = random.Random(f"listops-{params['seed']}-{chunk_index}")
  accepted = []
  while len(accepted) < CHUNK:
    budget = [params["max_length"]]
    try:
      source, value = _tree(rng, 1, params, budget)
    except _TooLong:
      continue
    length = params["max_length"] - budget[0]
    if params["min_length"] < length < params["max_length"]:
      accepted.append((source, value))
  return accepted


def generation_params(data_cfg: ml_collections.ConfigDict) -> dict:
  gen = data_cfg.generator
  params = {"operators": list(gen.operators), "max_depth": gen.max_depth,
            "max_args": gen.max_args, "min_length": gen.min_length,
            "max_length": gen.max_length, "operator_prob": gen.operator_prob,
            "num_train": gen.num_train, "num_val": gen.num_val, "num_test": gen.num_test,
            "seed": gen.seed}
  unknown = sorted(set(params["operators"]) - set(OPERATORS))
  if unknown:
    raise ValueError(f"config.data.generator.operators has {unknown}; known: {OPERATORS}")
  if params["max_args"] < 2 or params["max_depth"] < 1:
    raise ValueError("config.data.generator needs max_args >= 2 and max_depth >= 1")
  if params["min_length"] >= params["max_length"] - 1:
    raise ValueError("config.data.generator.min_length must be < max_length - 1")
  return params


def generate(params: dict, out_dir: str | os.PathLike, processes: int | None = None) -> Path:
  """Generates the splits into `out_dir` as release-format TSVs; deterministic for a seed
  (work units are seeded by index and consumed in order, whatever the process count)."""
  out_dir = Path(out_dir)
  total = params["num_train"] + params["num_val"] + params["num_test"]
  seen, samples, next_chunk = set(), [], 0
  processes = processes or min(os.cpu_count() or 1, 8)
  pool = multiprocessing.get_context("spawn").Pool(processes) if processes > 1 else None
  try:
    while len(samples) < total:
      count = max(1, -(-(total - len(samples)) // CHUNK) + 1)
      jobs = [(params, i) for i in range(next_chunk, next_chunk + count)]
      next_chunk += count
      results = pool.map(_generate_chunk, jobs) if pool else map(_generate_chunk, jobs)
      for chunk in results:
        for source, value in chunk:
          if source not in seen and len(samples) < total:
            seen.add(source)
            samples.append((source, value))
      if next_chunk > 1000 * (total // CHUNK + 10):
        raise RuntimeError(f"ListOps generator cannot find {total} distinct samples with "
                           f"{params}; widen the length bounds or depth")
  finally:
    if pool:
      pool.close()
      pool.join()
  out_dir.mkdir(parents=True, exist_ok=True)
  bounds = {"train": (0, params["num_train"]),
            "validation": (params["num_train"], params["num_train"] + params["num_val"]),
            "test": (params["num_train"] + params["num_val"], total)}
  for split, (start, stop) in bounds.items():
    tmp = out_dir / (SPLIT_FILES[split] + ".tmp")
    with open(tmp, "w", newline="") as f:
      f.write("Source\tTarget\n")
      for source, value in samples[start:stop]:
        f.write(f"{source}\t{value}\n")
    os.replace(tmp, out_dir / SPLIT_FILES[split])
  (out_dir / "generation.json").write_text(json.dumps(params, indent=1))
  return out_dir


# ----------------------------------------------------------------------------- reader
def tokenize(source: str) -> list[str]:
  """The original preprocessing: drop parentheses, rename "]" to "X", split on spaces."""
  return source.replace("]", "X").replace("(", "").replace(")", "").split()


def read_tsv(path: str | os.PathLike, max_length: int, name: str | None = None) -> Split:
  """Reads a release-format ListOps TSV into a padded `Split`; errors name file and line."""
  path = Path(path)
  rows, targets = [], []
  with open(path, newline="") as f:
    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header != ["Source", "Target"]:
      raise ValueError(f"{path}:1: expected the header 'Source<TAB>Target', got {header!r}")
    for line_no, row in enumerate(reader, start=2):
      if not "".join(row).strip():
        raise release.blank_line_error(path, line_no)
      if len(row) != 2:
        raise ValueError(f"{path}:{line_no}: expected 2 tab-separated fields "
                         f"(Source, Target), got {len(row)}")
      source, target = row
      if target.strip() not in {str(d) for d in range(10)}:
        raise ValueError(f"{path}:{line_no}: Target must be a digit 0-9, got {target!r}")
      ids = []
      for token in tokenize(source):
        if token not in TOKEN_IDS or token == "<pad>":
          raise ValueError(f"{path}:{line_no}: unknown ListOps token {token!r}; expected "
                           f"digits, {', '.join(OPERATORS)}, ']' and parentheses")
        ids.append(TOKEN_IDS[token])
      if not ids:
        raise ValueError(f"{path}:{line_no}: empty Source")
      rows.append(ids)
      targets.append(int(target))
  if not rows:  # LRA would train on nothing and report accuracy on 0 examples
    raise ValueError(f"{path}: has the header but no rows; expected one 'Source<TAB>Target' "
                     "row per example after it")
  too_long = sum(len(r) > max_length for r in rows)
  if too_long:  # the original truncates; we do too, but say so
    logging.warning("%s: %d of %d examples are longer than max_length=%d and are truncated",
                    path, too_long, len(rows), max_length)
  inputs, lengths = pad_rows(rows, max_length, np.uint8)
  return Split(name or path.stem, inputs, lengths, np.asarray(targets, np.int32),
               source=str(path))


def find_release_dir(data_dir: str | os.PathLike) -> Path:
  """Accepts the folder holding the TSVs, `listops-1000/` or the unpacked `lra_release/`."""
  return release.find_task_dir(
      data_dir, "listops-1000", list(SPLIT_FILES.values()), "ListOps",
      "Point config.data_dir at the unpacked LRA release, or leave it empty to generate "
      "ListOps locally (python -m lra.prepare --tasks=listops).")


def generated_dir(config: ml_collections.ConfigDict) -> Path:
  """Where the generated set for these generator settings lives (one folder per setting)."""
  params = generation_params(config.data)
  key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  return release.cache_root(config) / "listops" / f"generated-{key}"


def ensure_generated(config: ml_collections.ConfigDict) -> Path:
  out_dir = generated_dir(config)
  if not all((out_dir / f).is_file() for f in SPLIT_FILES.values()):
    logging.info("generating ListOps into %s (first use; reused afterwards)", out_dir)
    generate(generation_params(config.data), out_dir)
  return out_dir


def load(config: ml_collections.ConfigDict) -> TaskData:
  """Reads `config.data_dir` (the release) or the generated cache into a `TaskData`."""
  source_dir = find_release_dir(config.data_dir) if config.data_dir else ensure_generated(config)
  max_length = config.data.max_length
  splits = {split: read_tsv(source_dir / fname, max_length, split)
            for split, fname in SPLIT_FILES.items()}
  return TaskData("listops", splits, vocab_size=len(VOCAB), num_classes=NUM_CLASSES,
                  max_length=max_length, notes=f"read from {source_dir}")


def main(argv: list[str] | None = None):
  """`python -m lra.listops OUT_DIR [--preset=quick] [--processes=N]`."""
  import argparse  # pylint: disable=import-outside-toplevel
  from configs import base_listops  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(
      prog="python -m lra.listops",
      description="Generate ListOps in the LRA release format (basic_{train,val,test}.tsv).")
  parser.add_argument("out_dir", help="folder to write the three TSVs into (created)")
  parser.add_argument("--preset", default="",
                      help="config preset of configs/base_listops.py (e.g. quick); empty: the "
                           "LRA-sized set (96k/2k/2k, lengths 500-2000)")
  parser.add_argument("--processes", type=int, default=0, help="generator processes (0: auto)")
  args = parser.parse_args(argv)  # --help, and unknown arguments are refused
  if args.out_dir.startswith("-"):
    parser.error(f"OUT_DIR {args.out_dir!r} looks like a flag")
  config = base_listops.get_config(args.preset or None)
  out = generate(generation_params(config.data), args.out_dir, args.processes or None)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
