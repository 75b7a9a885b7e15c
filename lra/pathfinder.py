"""Pathfinder and Path-X (Linsley et al. 2018; LRA: Tay et al. 2021, sec. 3.5): release reader,
offline generator in the release layout, decoded-pixel cache, and `load(config)`.

Release layout (one folder per resolution and difficulty):
  pathfinder{32,64,128,256}/{curv_baseline,curv_contour_length_9,curv_contour_length_14}/
    metadata/<k>.npy   TEXT, one line per image: "<subfolder> <file.png> <index> <label> ..."
    imgs/<k>/sample_<i>.png
Pathfinder = pathfinder32 hard (1024 tokens), Path-X = pathfinder128 hard (16384 tokens).
Tokens are the pixel values 0-255 (vocabulary 256); every position is real (the mask is all
True; a black pixel is a token, not padding). Each difficulty is split 80/10/10 with the
dedicated `config.data.split_seed`. The release holds some empty (0-byte) PNG files; as in
LRA's pipeline, each split drops them after the split is drawn, and the count per split is
recorded (`TaskData.skipped`, printed and written to results.json). Any other unreadable,
missing or wrong-size PNG is an error naming the metadata file and line that listed it.
Generated sets (lra/pathfinder_draw.py) are written in the same layout and read by the same
reader; decoded pixels are cached as a uint8 `.npy` under the cache dir and memory-mapped on
later runs.
"""
from __future__ import annotations

import argparse
from concurrent import futures
import hashlib
import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import ml_collections
import numpy as np

from lra import png
from lra import pathfinder_draw as draw
from lra.batches import Split, TaskData
from lra.release import blank_line_error, cache_root

VOCAB_SIZE, NUM_CLASSES = 256, 2
UNIT = 1000  # images per generator work unit = per imgs/<k> folder and metadata/<k>.npy
GENERATOR_VERSION = 2  # bump when drawing changes, so cached sets are not reused


# ----------------------------------------------------------------------------- reader
def difficulty_dir_name(difficulty: str) -> str:
  if difficulty in draw.DIFFICULTIES:
    return draw.DIFFICULTIES[difficulty]
  if difficulty in draw.DIFFICULTIES.values():
    return difficulty
  raise ValueError(f"config.data.difficulty={difficulty!r}; expected one of "
                   f"{', '.join(draw.DIFFICULTIES)} (or their folder names "
                   f"{', '.join(draw.DIFFICULTIES.values())})")


def find_difficulty_dir(data_dir: str | os.PathLike, resolution: int, difficulty: str) -> Path:
  """Accepts the unpacked release (`lra_release/`, nested once or twice), `pathfinder{R}/`, or
  the difficulty folder itself."""
  data_dir, name = Path(data_dir).expanduser(), difficulty_dir_name(difficulty)
  res_dir = f"pathfinder{resolution}"
  candidates = [data_dir / res_dir / name, data_dir / "lra_release" / res_dir / name,
                data_dir / "lra_release" / "lra_release" / res_dir / name,
                data_dir / name, data_dir]
  for candidate in candidates:
    if (candidate / "metadata").is_dir():
      return candidate
  raise FileNotFoundError(
      f"no Pathfinder metadata/ folder for {res_dir}/{name} under {data_dir} (looked in "
      f"{', '.join(str(c) for c in candidates)}). Point config.data_dir at the unpacked LRA "
      "release, or leave it empty to generate Pathfinder images locally.")


def _metadata_files(diff_dir: Path) -> list[Path]:
  def order(path):
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)
  files = sorted((diff_dir / "metadata").glob("*.npy"), key=order)
  if not files:
    raise FileNotFoundError(f"{diff_dir / 'metadata'}: no *.npy metadata files")
  return files


def _metadata_lines(path: Path):
  """(line number, fields) per image; text files as in the release, or (tolerated) a real
  NumPy array of strings with one row per image. A blank line is an error."""
  raw = path.read_bytes()
  if raw.startswith(b"\x93NUMPY"):
    rows = np.load(path, allow_pickle=False)
    for i, row in enumerate(np.atleast_2d(rows), start=1):
      yield i, [str(x) for x in row]
    return
  for i, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
    if not line.strip():
      raise blank_line_error(path, i)
    yield i, line.split()


def read_metadata(diff_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
  """Image paths, labels and where each was listed ("<metadata file>:<line>") by
  `diff_dir/metadata/*.npy`, in file then line order."""
  paths, labels, listed_at = [], [], []
  for meta in _metadata_files(diff_dir):
    for line_no, fields in _metadata_lines(meta):
      if len(fields) < 4:
        raise ValueError(f"{meta}:{line_no}: expected at least 4 space-separated fields "
                         f"(subfolder, file name, index, label), got {len(fields)}")
      if fields[3] not in ("0", "1"):
        raise ValueError(f"{meta}:{line_no}: field 4 (label) must be 0 or 1, got "
                         f"{fields[3]!r}")
      paths.append(diff_dir / fields[0] / fields[1])
      labels.append(int(fields[3]))
      listed_at.append(f"{meta}:{line_no}")
  return paths, np.asarray(labels, np.int8), listed_at


def decode_pngs(paths: list[Path], listed_at: list[str], resolution: int,
                out: np.ndarray) -> np.ndarray:
  """Decodes every PNG into row i of `out` `[N, resolution**2]` (uint8) and returns which
  files are empty (0 bytes; their rows stay 0). LRA drops empty images
  (`ds.filter(lambda x: tf.strings.length(x['image']) > 0)` in
  lra_benchmarks/image/input_pipeline.py); every other bad file is an error naming the
  metadata line (`listed_at[i]`) that listed it."""
  empty = np.zeros(len(paths), bool)
  for i, (path, where) in enumerate(zip(paths, listed_at)):
    try:
      data = path.read_bytes()
    except FileNotFoundError:
      raise FileNotFoundError(f"{where}: lists Pathfinder image {path}, which is "
                              "missing") from None
    if not data:
      empty[i] = True
      continue
    image = png.decode(data, f"{where}: listed image {path}")
    if image.shape != (resolution, resolution):
      raise ValueError(f"{where}: listed image {path} is {image.shape[1]}x{image.shape[0]}, "
                       f"expected {resolution}x{resolution} (config.data.resolution)")
    out[i] = image.reshape(-1)
  return empty


def decoded_cache(config: ml_collections.ConfigDict, diff_dir: Path, resolution: int):
  """Pixels `[N, R*R]` uint8 (memory-mapped), labels `[N]`, which files were empty `[N]`
  bool, and the cache folder; decoded once per source."""
  files = _metadata_files(diff_dir)
  listing = [str(diff_dir.resolve()), resolution] + [(f.name, f.stat().st_size) for f in files]
  key = hashlib.sha1(json.dumps(listing).encode()).hexdigest()[:12]
  cache = cache_root(config) / "pathfinder" / f"decoded-{key}"
  tokens_path, labels_path = cache / "tokens.npy", cache / "labels.npy"
  empty_path = cache / "empty.npy"
  if not labels_path.exists():  # labels are written last: their presence marks completion
    paths, labels, listed_at = read_metadata(diff_dir)
    logging.info("decoding %d Pathfinder PNGs from %s into %s", len(paths), diff_dir, cache)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / "tokens.tmp.npy"
    try:
      tokens = np.lib.format.open_memmap(tmp, "w+", np.uint8, (len(paths), resolution ** 2))
      empty = decode_pngs(paths, listed_at, resolution, tokens)
      tokens.flush()
      del tokens
    except BaseException:  # a bad file (or Ctrl-C): leave no half-written gigabytes behind
      tmp.unlink(missing_ok=True)
      raise
    os.replace(tmp, tokens_path)
    (cache / "source.json").write_text(json.dumps({"source": str(diff_dir)}, indent=1))
    np.save(cache / "empty.tmp.npy", empty)
    os.replace(cache / "empty.tmp.npy", empty_path)
    np.save(cache / "labels.tmp.npy", labels)
    os.replace(cache / "labels.tmp.npy", labels_path)
  labels = np.load(labels_path)
  # A cache without empty.npy was written by the earlier decoder, which stopped at any empty
  # file: none of its rows is empty.
  empty = np.load(empty_path) if empty_path.exists() else np.zeros(len(labels), bool)
  return np.load(tokens_path, mmap_mode="r"), labels, empty, cache


class RowView:
  """Rows `index` of a (memory-mapped) array, without copying it: `view[rows]` reads only
  the rows asked for, so a 16384-token Path-X set never has to fit in memory."""

  def __init__(self, array: np.ndarray, index: np.ndarray):
    self.array, self.index = array, np.asarray(index)
    self.shape = (len(self.index),) + array.shape[1:]
    self.dtype = array.dtype

  def __len__(self):
    return len(self.index)

  def __getitem__(self, rows):
    wanted = self.index[rows]
    order = np.argsort(wanted, kind="stable")  # read the file in order, then restore
    out = np.empty((len(wanted),) + self.array.shape[1:], self.array.dtype)
    out[order] = self.array[wanted[order]]
    return out


def split_indices(count: int, split_seed: int) -> dict[str, np.ndarray]:
  """Seeded 80/10/10 split of one difficulty's images."""
  order = np.random.default_rng(split_seed).permutation(count)
  n_train, n_val = int(0.8 * count), int(0.1 * count)
  return {"train": order[:n_train], "validation": order[n_train:n_train + n_val],
          "test": order[n_train + n_val:]}


# ----------------------------------------------------------------------------- generator
def generation_params(config: ml_collections.ConfigDict) -> dict:
  data, gen = config.data, config.data.generator
  params = {"resolution": int(data.resolution), "difficulty": data.difficulty,
            "num_images": int(gen.num_images), "seed": int(gen.seed),
            "version": GENERATOR_VERSION}
  difficulty_dir_name(params["difficulty"])  # validates
  if params["num_images"] < 10:
    raise ValueError("config.data.generator.num_images must be at least 10 (80/10/10 split)")
  draw.draw_spec(params["resolution"], _short_difficulty(params["difficulty"]))
  return params


def _short_difficulty(difficulty: str) -> str:
  names = {v: k for k, v in draw.DIFFICULTIES.items()}
  return names.get(difficulty, difficulty)


def _write_unit(args) -> int:
  """Draws and writes images [unit * unit_size, ...) into imgs/<unit>/ and metadata/<unit>.npy.
  Seeded by (seed, resolution, difficulty, unit), so output does not depend on processes."""
  params, diff_dir, unit, unit_size = args
  difficulty = _short_difficulty(params["difficulty"])
  spec = draw.draw_spec(params["resolution"], difficulty)
  count = min(unit_size, params["num_images"] - unit * unit_size)
  level = list(draw.DIFFICULTIES).index(difficulty)
  rng = np.random.default_rng([params["seed"], params["resolution"], level, unit])
  labels = rng.permutation(np.arange(count) % 2)  # balanced within every unit
  batch = max(32, 500 * 32 // params["resolution"])
  images = draw.draw_images(spec, labels, rng, batch=batch)
  folder = Path(diff_dir) / "imgs" / str(unit)
  folder.mkdir(parents=True, exist_ok=True)
  lines = []
  for j, (image, label) in enumerate(zip(images, labels)):
    (folder / f"sample_{j}.png").write_bytes(png.encode_gray(image))
    # Fields 0, 1, 3 are what the release reader uses; the rest describes the drawing.
    lines.append(f"imgs/{unit} sample_{j}.png {j} {label} {spec.contour_length} "
                 f"{spec.distractor_length} {spec.num_distractors} {spec.resolution}\n")
  meta = Path(diff_dir) / "metadata" / f"{unit}.npy"
  meta.with_suffix(".tmp").write_text("".join(lines))
  os.replace(meta.with_suffix(".tmp"), meta)
  return count


def generate(params: dict, out_root: str | os.PathLike, processes: int | None = None,
             unit_size: int = UNIT) -> Path:
  """Writes `out_root/pathfinder{R}/<difficulty dir>/` in the release layout; returns it.
  Work units of `unit_size` images run on `processes` spawned processes."""
  diff_dir = (Path(out_root) / f"pathfinder{params['resolution']}"
              / difficulty_dir_name(params["difficulty"]))
  (diff_dir / "metadata").mkdir(parents=True, exist_ok=True)
  units = [(params, str(diff_dir), u, unit_size)
           for u in range(-(-params["num_images"] // unit_size))]
  processes = max(1, min(processes or os.cpu_count() or 1, len(units)))
  started = time.time()
  if processes > 1:
    context = multiprocessing.get_context("spawn")
    try:
      with futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        written = sum(pool.map(_write_unit, units))
    except futures.process.BrokenProcessPool as error:
      raise RuntimeError(
          "a Pathfinder generator process died. Spawned processes re-import the main "
          "script: guard it with `if __name__ == '__main__':`, or set "
          "config.data.generator.processes=1") from error
  else:
    written = sum(map(_write_unit, units))
  seconds = time.time() - started
  logging.info("generated %d Pathfinder images in %.1f s (%.0f images/s, %d processes)",
               written, seconds, written / max(seconds, 1e-9), processes)
  (diff_dir / "generation.json").write_text(json.dumps(
      dict(params, seconds=round(seconds, 1), processes=processes), indent=1))
  return diff_dir


def ensure_generated(config: ml_collections.ConfigDict) -> Path:
  """The generated set for these settings (drawn into the cache on first use)."""
  params = generation_params(config)
  key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
  root = cache_root(config) / "pathfinder" / f"generated-{key}"
  diff_dir = root / f"pathfinder{params['resolution']}" / difficulty_dir_name(params["difficulty"])
  if not (diff_dir / "generation.json").exists():  # written last
    logging.info("generating %d Pathfinder images into %s (first use; reused afterwards)",
                 params["num_images"], root)
    processes = 1 if params["num_images"] <= UNIT else config.data.generator.processes
    generate(params, root, processes or None)
  return diff_dir


# ----------------------------------------------------------------------------- task
def load(config: ml_collections.ConfigDict) -> TaskData:
  """Pathfinder ("pathfinder") or Path-X ("pathx") at `config.data.resolution` and
  `config.data.difficulty`, from `config.data_dir` (the release) or generated data."""
  resolution = int(config.data.resolution)
  length = resolution ** 2
  if config.data.max_length not in (0, length):
    raise ValueError(f"config.data.max_length={config.data.max_length} but a "
                     f"{resolution}x{resolution} image has {length} tokens")
  if config.data_dir:
    diff_dir = find_difficulty_dir(config.data_dir, resolution, config.data.difficulty)
  else:
    diff_dir = ensure_generated(config)
  tokens, labels, empty, cache = decoded_cache(config, diff_dir, resolution)
  lengths = np.full(len(labels), length, np.int32)  # no padding: the mask is all True
  seed = config.data.split_seed
  splits, skipped = {}, {}
  for name, index in split_indices(len(labels), seed).items():
    # As LRA: split first, then drop the empty files from each split, so an empty file
    # never moves another image into a different split.
    kept = index[~empty[index]]
    skipped[name] = int(len(index) - len(kept))
    splits[name] = Split(name, RowView(tokens, kept), lengths[kept],
                         labels[kept].astype(np.int32),
                         source=f"{diff_dir / 'metadata'} (80/10/10 split, split_seed {seed}; "
                                f"{skipped[name]} empty PNG files skipped)")
  sizes = ", ".join(f"{k} {len(v):,}" for k, v in splits.items())
  logging.info("Pathfinder %s: %s", diff_dir, sizes)
  if sum(skipped.values()):
    logging.warning("Pathfinder %s: skipped %d empty (0-byte) PNG files, as LRA does: %s",
                    diff_dir, sum(skipped.values()), skipped)
  return TaskData(config.task, splits, vocab_size=VOCAB_SIZE, num_classes=NUM_CLASSES,
                  max_length=length, skipped={"empty_png_files": skipped},
                  notes=f"read from {diff_dir} (decoded cache {cache}); split 80/10/10 with "
                  f"split_seed {seed}: {sizes}; empty (0-byte) PNG files skipped as LRA's "
                  "input pipeline does (counts: `skipped`)")


# ----------------------------------------------------------------------------- examples grid
def example_grid(per_class: int = 4, seed: int = 0, cell: int = 128) -> np.ndarray:
  """Rows 32 / 64 / 128 px (hard), each `per_class` positives | `per_class` negatives,
  upscaled (nearest) to `cell` pixels, uint8."""
  gap, rows = 4, []
  for resolution in (32, 64, 128):
    rng = np.random.default_rng([seed, resolution])
    labels = np.array([1] * per_class + [0] * per_class)
    images = draw.draw_images(draw.draw_spec(resolution, "hard"), labels, rng)
    scale = cell // resolution
    tiles = [np.kron(image, np.ones((scale, scale), np.uint8)) for image in images]
    row = []
    for i, tile in enumerate(tiles):
      width = 6 * gap if i == per_class - 1 else gap  # wider gap between the two classes
      row += [tile, np.full((cell, width), 96, np.uint8)]
    row = np.concatenate(row[:-1], 1)
    rows += [row, np.full((gap, row.shape[1]), 96, np.uint8)]
  return np.concatenate(rows[:-1], 0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--grid", help="write a PNG grid of positives | negatives here")
  parser.add_argument("--generate", help="write a generated set (release layout) here")
  parser.add_argument("--resolution", type=int, default=32)
  parser.add_argument("--difficulty", default="hard")
  parser.add_argument("--num_images", type=int, default=200_000)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--processes", type=int, default=0)
  args = parser.parse_args()
  logging.basicConfig(level=logging.INFO)
  if args.grid:
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    Path(args.grid).write_bytes(png.encode_gray(example_grid(), level=9))
    print(f"wrote {args.grid}")
  if args.generate:
    params = {"resolution": args.resolution, "difficulty": args.difficulty,
              "num_images": args.num_images, "seed": args.seed, "version": GENERATOR_VERSION}
    started = time.time()
    out = generate(params, args.generate, args.processes or None)
    seconds = time.time() - started
    print(f"wrote {args.num_images} images to {out} in {seconds:.1f} s "
          f"({args.num_images / seconds:.0f} images/s)")
  if not (args.grid or args.generate):
    parser.print_help()


if __name__ == "__main__":
  main()
