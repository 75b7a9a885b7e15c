"""Pathfinder: release-layout reader (empty PNGs skipped and counted as LRA does, every other
bad file named by its metadata line), PNG codec, generator determinism and balance, no local
label cue (a pixel-statistics baseline stays at chance), and an end-to-end tiny training run."""
import filecmp
import json

import numpy as np
import pytest

from configs import transformer_pathfinder
from lra import pathfinder, png
from lra import pathfinder_draw as draw


def write_release_fixture(root, images, labels, resolution=8):
  """`root/lra_release/pathfinder8/curv_contour_length_14/` exactly as the release: a text
  metadata/0.npy and PNGs under imgs/0/."""
  diff_dir = root / "lra_release" / f"pathfinder{resolution}" / "curv_contour_length_14"
  (diff_dir / "imgs" / "0").mkdir(parents=True)
  (diff_dir / "metadata").mkdir()
  lines = []
  for i, (image, label) in enumerate(zip(images, labels)):
    (diff_dir / "imgs" / "0" / f"sample_{i}.png").write_bytes(png.encode_gray(image))
    lines.append(f"imgs/0 sample_{i}.png {i} {label} 14 5 6 {resolution}\n")
  (diff_dir / "metadata" / "0.npy").write_text("".join(lines))
  return diff_dir


def fixture_config(tmp_path, data_dir=""):
  config = transformer_pathfinder.get_config("tiny")
  config.data_dir = str(data_dir)
  config.cache_dir = str(tmp_path / "cache")
  config.data.resolution, config.data.max_length = 8, 64
  config.data.difficulty = "hard"
  return config


def test_release_layout_reads_to_pixel_tokens(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 8, 8)).astype(np.uint8)
  images[0] = 0  # an all-black image: every pixel is still a real token
  labels = np.arange(20) % 2
  write_release_fixture(tmp_path, images, labels)
  config = fixture_config(tmp_path, data_dir=tmp_path)
  task = pathfinder.load(config)
  assert (task.vocab_size, task.num_classes, task.max_length) == (256, 2, 64)
  assert task.sizes() == {"train": 16, "validation": 2, "test": 2}
  order = np.concatenate([pathfinder.split_indices(20, config.data.split_seed)[s]
                          for s in ("train", "validation", "test")])
  assert sorted(order) == list(range(20))
  seen = 0
  for name, index in pathfinder.split_indices(20, config.data.split_seed).items():
    batch = task.splits[name].batch(np.arange(len(index)))
    np.testing.assert_array_equal(batch["inputs"], images[index].reshape(len(index), 64))
    np.testing.assert_array_equal(batch["targets"], labels[index])
    assert batch["mask"].all()
    seen += len(index)
  assert seen == 20
  # The second load is served by the memory-mapped cache.
  again = pathfinder.load(config)
  assert isinstance(again.splits["train"].inputs.array, np.memmap)
  other = fixture_config(tmp_path, data_dir=tmp_path)
  other.data.split_seed = 1
  assert not np.array_equal(pathfinder.load(other).splits["train"].inputs.index,
                            task.splits["train"].inputs.index)


def test_malformed_metadata_and_missing_png_are_named(tmp_path):
  images = np.zeros((4, 8, 8), np.uint8)
  diff_dir = write_release_fixture(tmp_path, images, [0, 1, 0, 1])
  meta = diff_dir / "metadata" / "0.npy"
  lines = meta.read_text().splitlines()
  meta.write_text("\n".join(lines[:2] + ["imgs/0 sample_2.png 2"] + lines[3:]) + "\n")
  with pytest.raises(ValueError, match=r"metadata/0\.npy:3: expected at least 4"):
    pathfinder.read_metadata(diff_dir)
  meta.write_text("\n".join(lines[:2] + ["imgs/0 sample_2.png 2 yes"] + lines[3:]) + "\n")
  with pytest.raises(ValueError, match=r"0\.npy:3: field 4 \(label\) must be 0 or 1"):
    pathfinder.read_metadata(diff_dir)
  meta.write_text("\n".join(lines) + "\n")
  (diff_dir / "imgs" / "0" / "sample_3.png").unlink()
  with pytest.raises(FileNotFoundError,
                     match=r"metadata/0\.npy:4: lists .*imgs/0/sample_3\.png, which is missing"):
    pathfinder.load(fixture_config(tmp_path, data_dir=tmp_path))
  with pytest.raises(FileNotFoundError, match="no Pathfinder metadata"):
    pathfinder.find_difficulty_dir(tmp_path, 32, "hard")


def test_empty_pngs_are_skipped_per_split_and_counted(tmp_path):
  """LRA draws its 80/10/10 split, then drops 0-byte images from each split; so do we, and
  the count per split is in `skipped` and in the printed task description."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (20, 8, 8)).astype(np.uint8)
  labels = np.arange(20) % 2
  diff_dir = write_release_fixture(tmp_path, images, labels)
  config = fixture_config(tmp_path, data_dir=tmp_path)
  index = pathfinder.split_indices(20, config.data.split_seed)
  empty = {int(index["train"][0]), int(index["train"][5]), int(index["test"][1])}
  for i in empty:
    (diff_dir / "imgs" / "0" / f"sample_{i}.png").write_bytes(b"")
  task = pathfinder.load(config)
  assert task.sizes() == {"train": 14, "validation": 2, "test": 1}
  assert task.skipped == {"empty_png_files": {"train": 2, "validation": 0, "test": 1}}
  assert "skipped 3 empty png files (train=2, validation=0, test=1)" in task.describe()
  for name, split_index in index.items():  # no image changes split; the rest read intact
    kept = np.array([i for i in split_index if i not in empty])
    batch = task.splits[name].batch(np.arange(len(kept)))
    np.testing.assert_array_equal(batch["inputs"], images[kept].reshape(len(kept), 64))
    np.testing.assert_array_equal(batch["targets"], labels[kept])
  again = pathfinder.load(config)  # the same from the decoded cache
  assert again.skipped == task.skipped and again.sizes() == task.sizes()


def test_a_split_left_empty_is_an_error_naming_it(tmp_path):
  images = np.zeros((20, 8, 8), np.uint8)
  diff_dir = write_release_fixture(tmp_path, images, np.arange(20) % 2)
  config = fixture_config(tmp_path, data_dir=tmp_path)
  for i in pathfinder.split_indices(20, config.data.split_seed)["validation"]:
    (diff_dir / "imgs" / "0" / f"sample_{i}.png").write_bytes(b"")
  with pytest.raises(ValueError, match=r"split 'validation' has no examples \(from "
                     r".*curv_contour_length_14/metadata .*2 empty PNG files skipped"):
    pathfinder.load(config)


@pytest.mark.parametrize("damage,message", [
    ("truncated", r"0\.npy:3: listed image .*sample_2\.png: (truncated|not a readable) PNG"),
    ("garbage", r"0\.npy:3: listed image .*sample_2\.png: not a readable PNG"),
    ("wrong_size", r"0\.npy:3: listed image .*sample_2\.png is 16x16, expected 8x8"),
])
def test_bad_png_names_the_metadata_line_and_leaves_no_partial_cache(tmp_path, damage,
                                                                      message):
  diff_dir = write_release_fixture(tmp_path, np.full((4, 8, 8), 7, np.uint8), [0, 1, 0, 1])
  path = diff_dir / "imgs" / "0" / "sample_2.png"
  data = path.read_bytes()
  path.write_bytes({"truncated": data[:-20], "garbage": b"\x89PNG not really",
                    "wrong_size": png.encode_gray(np.zeros((16, 16), np.uint8))}[damage])
  with pytest.raises(ValueError, match=message):
    pathfinder.load(fixture_config(tmp_path, data_dir=tmp_path))
  assert not list((tmp_path / "cache").rglob("*.npy"))  # no half-written tokens


@pytest.mark.parametrize("where", ["middle", "end"])
def test_blank_metadata_line_is_an_error_naming_file_and_line(tmp_path, where):
  diff_dir = write_release_fixture(tmp_path, np.zeros((4, 8, 8), np.uint8), [0, 1, 0, 1])
  meta = diff_dir / "metadata" / "0.npy"
  lines = meta.read_text().splitlines(keepends=True)
  lines.insert(2 if where == "middle" else 4, "  \n")
  meta.write_text("".join(lines))
  line = 3 if where == "middle" else 5
  with pytest.raises(ValueError, match=rf"metadata/0\.npy:{line}: blank line"):
    pathfinder.read_metadata(diff_dir)


def test_png_round_trip_colour_and_corrupt_files():
  image = np.random.default_rng(1).integers(0, 256, (5, 7)).astype(np.uint8)
  np.testing.assert_array_equal(png.decode(png.encode_gray(image)), image)
  from PIL import Image  # a release PNG saved in colour still reads as gray levels
  import io
  buffer = io.BytesIO()
  Image.fromarray(np.stack([image] * 3, -1), mode="RGB").save(buffer, format="PNG")
  np.testing.assert_array_equal(png.decode(buffer.getvalue()), image)
  with pytest.raises(ValueError, match="broken.png: not a readable PNG"):
    png.decode(b"not a png", "broken.png")


def generation(num_images, seed=0, resolution=32, difficulty="hard"):
  return {"resolution": resolution, "difficulty": difficulty, "num_images": num_images,
          "seed": seed, "version": pathfinder.GENERATOR_VERSION}


def test_generator_is_deterministic_and_independent_of_processes(tmp_path):
  # 3 work units of 30, 30 and 10 images
  one = pathfinder.generate(generation(70), tmp_path / "one", processes=1, unit_size=30)
  two = pathfinder.generate(generation(70), tmp_path / "two", processes=2, unit_size=30)
  files = sorted(p.relative_to(one) for p in one.rglob("*") if p.suffix in (".png", ".npy"))
  assert len(files) == 70 + 3
  for rel in files:
    assert filecmp.cmp(one / rel, two / rel, shallow=False), rel
  other = pathfinder.generate(generation(70, seed=1), tmp_path / "other", processes=1,
                              unit_size=30)
  assert not filecmp.cmp(one / "imgs/0/sample_0.png", other / "imgs/0/sample_0.png",
                         shallow=False)
  paths, labels, _ = pathfinder.read_metadata(one)
  assert len(paths) == 70 and abs(int(labels.sum()) - 35) <= 1  # balanced
  assert all(p.exists() for p in paths)


def pixel_features(images):
  """Local statistics: a pixel-value histogram, bright-pixel counts overall and per 8x8 block."""
  n = len(images)
  hist = np.stack([np.bincount(im.ravel() // 32, minlength=8) for im in images]) / 1024
  bright = images > 128
  blocks = bright.reshape(n, 4, 8, 4, 8).sum((2, 4)).reshape(n, 16) / 64
  return np.concatenate([hist, bright.reshape(n, -1).mean(1, keepdims=True), blocks], 1)


def logistic_regression_accuracy(x_train, y_train, x_test, y_test, steps=500, lr=0.5):
  mean, std = x_train.mean(0), x_train.std(0) + 1e-6
  x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
  w, b = np.zeros(x_train.shape[1]), 0.0
  for _ in range(steps):
    p = 1 / (1 + np.exp(-(x_train @ w + b)))
    w -= lr * (x_train.T @ (p - y_train) / len(y_train) + 1e-3 * w)
    b -= lr * np.mean(p - y_train)
  return np.mean(((x_test @ w + b) > 0) == y_test), np.mean(((x_train @ w + b) > 0) == y_train)


def test_labels_are_balanced_and_not_readable_from_pixel_statistics():
  spec = draw.draw_spec(32, "hard")
  rng = np.random.default_rng(0)
  labels = rng.permutation(np.arange(1500) % 2)
  images = draw.draw_images(spec, labels, rng, batch=500)
  assert labels.sum() == 750
  assert images.shape == (1500, 32, 32) and images.dtype == np.uint8
  # Same ink in both classes: bright-pixel counts agree closely.
  bright = (images > 128).sum((1, 2))
  assert abs(bright[labels == 1].mean() - bright[labels == 0].mean()) < 0.02 * bright.mean()
  features = pixel_features(images)
  test_acc, train_acc = logistic_regression_accuracy(features[:1000], labels[:1000],
                                                     features[1000:], labels[1000:])
  assert test_acc < 0.6, (test_acc, train_acc)  # chance is 0.5; 500 test images: sd 0.022


def test_marker_distance_is_the_same_for_both_classes():
  """The chosen positive (both ends of `which`) and negative (end i of contour 0, end j of
  contour 1) marker pairs are equally far apart, up to the tolerance, or the image is redrawn."""
  spec = draw.draw_spec(32, "hard")
  ends = np.random.default_rng(0).uniform(0, 32, (2, 2, 5000, 2))
  ok, which, i, j = draw.match_marker_distance(spec, ends)
  rows = np.arange(5000)
  positive = np.linalg.norm(ends[which, 0, rows] - ends[which, 1, rows], axis=-1)
  negative = np.linalg.norm(ends[0, i, rows] - ends[1, j, rows], axis=-1)
  assert 0.05 < ok.mean() < 1
  assert np.all(np.abs(positive - negative)[ok] <= draw.DISTANCE_TOLERANCE * spec.step)


def test_tiny_training_run_on_generated_images(tmp_path, capsys):
  import train  # pylint: disable=import-outside-toplevel
  config = transformer_pathfinder.get_config("tiny")
  config.cache_dir = str(tmp_path / "cache")
  diff_dir = pathfinder.ensure_generated(config)
  test_rows = pathfinder.split_indices(200, config.data.split_seed)["test"]
  paths, _, _ = pathfinder.read_metadata(diff_dir)
  paths[test_rows[0]].write_bytes(b"")  # as in the release: one empty PNG, skipped
  results = train.train_and_evaluate(config, tmp_path / "run")
  assert results["steps"] == config.train.num_train_steps
  assert results["task_sizes"] == {"train": 160, "validation": 20, "test": 19}
  skipped = {"empty_png_files": {"train": 0, "validation": 0, "test": 1}}
  assert results["skipped_examples"] == skipped
  assert json.loads((tmp_path / "run" / "results.json").read_text())["skipped_examples"] == skipped
  assert "skipped 1 empty png files (train=0, validation=0, test=1)" in capsys.readouterr().out
  assert 0.0 <= results["splits"]["test"]["accuracy"] <= 1.0
  assert np.isfinite(results["splits"]["test"]["loss"])
  generated = list((tmp_path / "cache" / "pathfinder").glob("generated-*/pathfinder16/*"))
  assert [p.name for p in generated] == ["curv_baseline"]  # tiny uses the easy set
