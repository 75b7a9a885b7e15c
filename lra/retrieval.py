"""LRA Retrieval: byte-level document matching on the ACL Anthology Network (Tay et al. 2021,
sec. 2.2.3), plus a clearly SYNTHETIC stand-in for CPU-sized runs.

Release format: `tsv_data/new_aan_pairs.{train,eval,test}.tsv`, tab-separated, no header,
columns `label id1 id2 text1 text2`, label a float (`1.0` = the two papers are linked by a
citation). Tokens are bytes with `ByteTextEncoder` ids (byte + 1, 0 = padding, vocabulary
257, see lra/text.py); each text is cut to `config.data.max_length` (LRA: 4000 per text,
8K in total). Splits: train = train, validation = eval, test = test.

The ~1 GB train file is stream-parsed line by line straight into memory-mapped .npy files
under `<cache_root>/retrieval/` (one pass counts rows, a second fills the arrays), so no
split is ever held as Python strings.

Synthetic pairs (only when `config.data.synthetic.use_when_no_release` is True and no
release is given; the `quick`/`tiny` presets do this): random "documents" of pseudo-words,
each carrying `num_citations` citation-like spans such as `(Mavo 1987)` drawn from
`num_keys` keys. Label 1 means the two documents share exactly one key, label 0 that they
share none (classes balanced). The model must find the spans in each tower and compare them
through the head -- learnable, but not from any single document. It is NOT the AAN task;
results on it say nothing about LRA Retrieval.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path

import ml_collections
import numpy as np

from lra import release
from lra.batches import Split, TaskData
from lra.release import cache_root
from lra.text import BYTE_OFFSET, NUM_CLASSES, VOCAB_SIZE, byte_dtype

SPLIT_FILES = {"train": "new_aan_pairs.train.tsv", "validation": "new_aan_pairs.eval.tsv",
               "test": "new_aan_pairs.test.tsv"}
NUM_FIELDS = 5  # label id1 id2 text1 text2
_CHUNK = 1 << 24


# ----------------------------------------------------------------------------- release files
def find_release_dir(data_dir: str | os.PathLike) -> Path:
  """Accepts the folder holding the TSVs, `tsv_data/`, or an unpacked `lra_release/`."""
  return release.find_task_dir(
      data_dir, "tsv_data", list(SPLIT_FILES.values()), "AAN retrieval",
      "Download the LRA release (lra_release.gz from the google-research/long-range-arena "
      f"README) and run python -m lra.prepare --tasks=retrieval --data_dir={data_dir} "
      "--release=PATH/TO/lra_release.gz")


def _scan(path: Path) -> tuple[int, bool]:
  """(upper bound on rows, whether byte 0xFF occurs) in one fast binary pass."""
  lines, has_ff, last = 0, False, b"\n"
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      lines += chunk.count(b"\n")
      has_ff = has_ff or b"\xff" in chunk
      last = chunk[-1:]
  return lines + (last != b"\n"), has_ff


def _parse_label(raw: bytes, path: Path, line_no: int) -> int:
  try:
    value = float(raw)
  except ValueError:
    value = None
  if value not in (0.0, 1.0):
    raise ValueError(f"{path}:{line_no}: label must be 0 or 1 (written like '1.0'), got "
                     f"{raw[:40]!r}")
  return int(value)


def parse_tsv(path: str | os.PathLike, max_length: int, out_dir: Path, prefix: str) -> int:
  """Stream-parses one release TSV into `out_dir/<prefix>_{inputs,inputs2,lengths,lengths2,
  targets}.npy` (the inputs memory-mapped while written); returns the row count. Errors name
  file and line; a blank line is one (`release.blank_line_error`)."""
  path = Path(path)
  if max_length < 1:
    raise ValueError(f"config.data.max_length={max_length}; expected a positive length")
  upper, has_ff = _scan(path)
  dtype = byte_dtype(has_ff)
  rows = max(upper, 1)
  open_memmap = np.lib.format.open_memmap
  inputs = [open_memmap(out_dir / f"{prefix}_{name}.npy", "w+", dtype, (rows, max_length))
            for name in ("inputs", "inputs2")]
  lengths = [np.zeros(rows, np.int32), np.zeros(rows, np.int32)]
  targets = np.zeros(rows, np.int32)
  count = 0
  with open(path, "rb") as f:
    for line_no, line in enumerate(f, start=1):
      line = line.rstrip(b"\r\n")
      if not line.strip():
        raise release.blank_line_error(path, line_no)
      fields = line.split(b"\t")
      if len(fields) != NUM_FIELDS:
        raise ValueError(f"{path}:{line_no}: expected {NUM_FIELDS} tab-separated fields "
                         f"(label, id1, id2, text1, text2), got {len(fields)}")
      targets[count] = _parse_label(fields[0], path, line_no)
      for tower, text in enumerate(fields[3:]):
        ids = np.frombuffer(text, np.uint8, count=min(len(text), max_length))
        inputs[tower][count, :len(ids)] = ids.astype(dtype) + BYTE_OFFSET
        lengths[tower][count] = len(ids)
      count += 1
  if count == 0:
    raise ValueError(f"{path}: no rows (split {prefix!r}); expected one tab-separated row "
                     "'label id1 id2 text1 text2' per pair")
  for array in inputs:
    array.flush()
  del inputs
  np.save(out_dir / f"{prefix}_lengths.npy", lengths[0][:count])
  np.save(out_dir / f"{prefix}_lengths2.npy", lengths[1][:count])
  np.save(out_dir / f"{prefix}_targets.npy", targets[:count])
  return count


def read_release(source_dir: Path, max_length: int, cache: Path) -> dict[str, Split]:
  """Parses (once; cached by file identity and max_length) and memory-maps the three splits."""
  files = {split: (source_dir / name).resolve() for split, name in SPLIT_FILES.items()}
  key = {"files": {s: [str(p), p.stat().st_size, p.stat().st_mtime_ns] for s, p in files.items()},
         "max_length": max_length, "encoding": "ByteTextEncoder (byte + 1)"}
  folder = cache / f"cache-{hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]}"
  if not (folder / "key.json").is_file():
    logging.info("tokenising AAN pairs from %s into %s (first use)", source_dir, folder)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
      key["counts"] = {split: parse_tsv(path, max_length, tmp, split)
                       for split, path in files.items()}
      (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
    except BaseException:  # a failed parse (or Ctrl-C) leaves no gigabytes of half-written arrays
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    try:
      os.replace(tmp, folder)
    except OSError:  # another process finished first
      shutil.rmtree(tmp, ignore_errors=True)
  counts = json.loads((folder / "key.json").read_text())["counts"]

  def array(name: str) -> np.ndarray:
    return np.load(folder / f"{name}.npy", mmap_mode="r")

  return {split: Split(split, array(f"{split}_inputs")[:n], array(f"{split}_lengths"),
                       array(f"{split}_targets"), array(f"{split}_inputs2")[:n],
                       array(f"{split}_lengths2"), source=str(files[split]))
          for split, n in ((s, counts[s]) for s in SPLIT_FILES)}


# ----------------------------------------------------------------------------- synthetic pairs
def synthetic_params(data_cfg: ml_collections.ConfigDict) -> dict:
  syn = data_cfg.synthetic
  params = {k: syn[k] for k in ("num_train", "num_eval", "num_test", "doc_length", "num_keys",
                                "num_citations", "seed")}
  if params["num_keys"] < 2 * params["num_citations"]:
    raise ValueError("config.data.synthetic needs num_keys >= 2 * num_citations (negative "
                     "pairs use disjoint keys)")
  if params["doc_length"] < 32:
    raise ValueError("config.data.synthetic.doc_length must be at least 32 bytes")
  return params


def _words(rng: random.Random, count: int, capitalise=False) -> list[str]:
  letters = "abcdefghijklmnopqrstuvwxyz"
  words = set()
  while len(words) < count:
    word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 8)))
    words.add(word.capitalize() if capitalise else word)
  return sorted(words)


def _document(rng: random.Random, words: list[str], citations: list[str], length: int) -> str:
  budget = int(length * rng.uniform(0.6, 1.0)) - sum(len(c) + 1 for c in citations)
  body = []
  while budget > 0:
    body.append(rng.choice(words))
    budget -= len(body[-1]) + 1
  for citation in citations:
    body.insert(rng.randint(0, len(body)), citation)
  return " ".join(body)


def generate_synthetic(params: dict, out_dir: str | os.PathLike) -> Path:
  """Writes synthetic pairs in the exact release format to `out_dir/tsv_data/`."""
  rng = random.Random(f"aan-synthetic-{params['seed']}")
  words = _words(rng, 400)
  keys = [f"({name} {rng.randint(1965, 2015)})"
          for name in rng.sample(_words(rng, 4 * params["num_keys"], True), params["num_keys"])]
  out = Path(out_dir) / "tsv_data"
  out.mkdir(parents=True, exist_ok=True)
  sizes = {"train": params["num_train"], "validation": params["num_eval"],
           "test": params["num_test"]}
  n_cite = params["num_citations"]
  for split, size in sizes.items():
    tmp = out / (SPLIT_FILES[split] + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
      for i in range(size):
        label = rng.random() < 0.5
        chosen = rng.sample(keys, 2 * n_cite)
        first, second = chosen[:n_cite], chosen[n_cite:]
        if label:  # exactly one shared key
          second[0] = first[0]
        text1 = _document(rng, words, first, params["doc_length"])
        text2 = _document(rng, words, second, params["doc_length"])
        f.write(f"{float(label):.1f}\tsyn-{split}-{i:06d}-a\tsyn-{split}-{i:06d}-b\t"
                f"{text1}\t{text2}\n")
    os.replace(tmp, out / SPLIT_FILES[split])
  (Path(out_dir) / "synthetic.json").write_text(json.dumps(params, indent=1))
  return out


def ensure_synthetic(config: ml_collections.ConfigDict) -> Path:
  params = synthetic_params(config.data)
  key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  out_dir = cache_root(config) / "retrieval" / f"synthetic-{key}"
  if not all((out_dir / "tsv_data" / f).is_file() for f in SPLIT_FILES.values()):
    generate_synthetic(params, out_dir)
  return out_dir / "tsv_data"


# ----------------------------------------------------------------------------- task
def load(config: ml_collections.ConfigDict) -> TaskData:
  synthetic = not config.data_dir
  if synthetic and not config.data.synthetic.use_when_no_release:
    raise FileNotFoundError(
        "LRA Retrieval reads the AAN pairs of the LRA release: set config.data_dir to the "
        "folder where it is unpacked (prepare it with python -m lra.prepare --tasks=retrieval "
        "--data_dir=DIR --release=PATH/TO/lra_release.gz). The :quick and :tiny presets use "
        "synthetic pairs instead (config.data.synthetic.use_when_no_release=True).")
  source_dir = ensure_synthetic(config) if synthetic else find_release_dir(config.data_dir)
  if synthetic:
    logging.warning("Retrieval: no config.data_dir, using SYNTHETIC pairs from %s (not AAN)",
                    source_dir)
  max_length = config.data.max_length
  splits = read_release(source_dir, max_length, cache_root(config) / "retrieval")
  kind = "SYNTHETIC citation-matching pairs (not AAN)" if synthetic else "AAN release"
  return TaskData("retrieval", splits, vocab_size=VOCAB_SIZE, num_classes=NUM_CLASSES,
                  max_length=max_length, pair=True,
                  notes=f"{kind} from {source_dir}; each text cut to {max_length} bytes")
