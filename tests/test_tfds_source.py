"""lra.tfds_source: reading a TFDS split as numpy batches under tfds.testing.mock_data (sizes,
fields, fixed order, percent slices), what it asks tfds.load for (no implicit download, no file
shuffling, the data dir), the not-prepared error (data set, data dir, task, prepare command),
other tfds errors passed through, and the array cache (built once, memory-mapped read-only, no
half-written folder after a failure, another process's finished cache kept)."""
import re

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from lra import tfds_source

IMDB = "imdb_reviews/plain_text:1.0.0"  # the data sets lra.text and lra.image read
CIFAR = "cifar10:3.0.2"


def make_config(tmp_path, data_dir="tfds", **data):
  return ml_collections.ConfigDict({
      "data_dir": str(tmp_path / data_dir) if data_dir else "",
      "cache_dir": str(tmp_path / "cache"), "data": dict(data)})


def numbered_reviews(self, split, **kwargs):
  del self, kwargs
  n = {"train": 7, "test": 3}[str(split)]
  return tf.data.Dataset.from_tensor_slices(
      {"text": [f"review {i}".encode() for i in range(n)], "label": np.arange(n) % 2})


def test_iterate_split_yields_every_example_once_in_order(tmp_path):
  config = make_config(tmp_path)
  with tfds.testing.mock_data(as_dataset_fn=numbered_reviews):
    out = list(tfds_source.iterate_split(IMDB, "train", config, task="text", batch_size=3))
  assert [len(b["label"]) for b in out] == [3, 3, 1]
  assert all(set(b) == {"text", "label"} and isinstance(b["label"], np.ndarray) for b in out)
  texts = [t for b in out for t in b["text"]]
  assert texts == [f"review {i}".encode() for i in range(7)]


def test_mock_split_sizes_and_fields(tmp_path):
  config = make_config(tmp_path)
  with tfds.testing.mock_data(num_examples=20):
    sizes = {split: [len(b["label"]) for b in tfds_source.iterate_split(
        CIFAR, split, config, task="image", batch_size=8)] for split in ("train", "test")}
    (batch,) = tfds_source.iterate_split(CIFAR, "test", config, task="image", batch_size=32)
  assert sizes == {"train": [8, 8, 4], "test": [8, 8, 4]}
  assert set(batch) == {"id", "image", "label"}
  assert batch["image"].shape == (20, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].min() >= 0 and batch["label"].max() < 10


def test_what_tfds_load_is_asked_for(tmp_path, monkeypatch):
  seen = {}

  def fake_load(name, **kwargs):
    seen.update(kwargs, name=name)
    return tf.data.Dataset.from_tensor_slices({"label": np.arange(2)})

  monkeypatch.setattr(tfds, "load", fake_load)
  monkeypatch.setenv("HOME", str(tmp_path))
  config = make_config(tmp_path)
  config.data_dir = "~/tfds"
  list(tfds_source.iterate_split(IMDB, "test", config, task="text"))
  assert seen == {"name": IMDB, "split": "test", "data_dir": str(tmp_path / "tfds"),
                  "download": False, "shuffle_files": False}
  config.data.tfds_download = True
  config.data_dir = ""
  list(tfds_source.iterate_split(IMDB, "test", config, task="text"))
  assert seen["download"] is True and seen["data_dir"] is None


@pytest.mark.parametrize("name,task,folder", [(CIFAR, "image", "cifar10"),
                                              (IMDB, "text", "imdb_reviews")])
def test_a_missing_data_set_names_it_the_data_dir_and_the_command(tmp_path, name, task, folder):
  config = make_config(tmp_path)
  with pytest.raises(FileNotFoundError) as error:
    next(tfds_source.iterate_split(name, "test", config, task=task))
  message = str(error.value)
  assert message.startswith(f"TFDS data set {name!r} is not prepared in {tmp_path / 'tfds'} "
                            f"(task {task!r})")
  assert f"python -m lra.prepare --tasks={task} --data_dir={tmp_path / 'tfds'}\n" in message
  # the folder TFDS keeps it in under the data dir: cifar10/3.0.2, imdb_reviews/plain_text/1.0.0
  assert f"a prepared '{folder}' TFDS directory" in message
  assert not (tmp_path / "tfds" / folder).exists()  # nothing downloaded or prepared


def test_other_tfds_assertion_errors_pass_through(tmp_path, monkeypatch):
  def broken_load(name, **kwargs):
    raise AssertionError("some other tfds failure")

  monkeypatch.setattr(tfds, "load", broken_load)
  with pytest.raises(AssertionError, match="^some other tfds failure$"):
    next(tfds_source.iterate_split(CIFAR, "test", make_config(tmp_path), task="image"))


def test_messages_in_words(tmp_path):
  config = make_config(tmp_path)
  assert tfds_source.describe_split(CIFAR, "train[:90%]", config) == (
      f"TFDS {CIFAR} 'train[:90%]' in {tmp_path / 'tfds'}")
  assert str(tfds_source.no_examples_error(CIFAR, "test", config)).startswith(
      f"TFDS {CIFAR} 'test' in {tmp_path / 'tfds'} has no examples")
  default = make_config(tmp_path, data_dir="")
  assert tfds_source.tfds_data_dir(default) is None
  assert "TFDS default data dir ($TFDS_DATA_DIR" in tfds_source.where(default)
  assert tfds_source.prepare_command("text", default) == "python -m lra.prepare --tasks=text"


def test_cache_folder_depends_on_task_and_key(tmp_path):
  config = make_config(tmp_path)
  folder = tfds_source.cache_dir_for(config, "text", {"max_length": 8, "v": 1})
  assert folder.parent == tmp_path / "cache" / "text" and folder.name.startswith("cache-")
  assert folder == tfds_source.cache_dir_for(config, "text", {"v": 1, "max_length": 8})
  assert folder != tfds_source.cache_dir_for(config, "text", {"max_length": 9, "v": 1})
  assert folder.name == tfds_source.cache_dir_for(config, "image", {"max_length": 8, "v": 1}).name


def test_cached_arrays_are_built_once_and_memory_mapped(tmp_path):
  folder, calls = tmp_path / "cache-x", []

  def build():
    calls.append(1)
    return {"inputs": np.arange(12, dtype=np.uint8).reshape(3, 4), "targets": np.array([0, 1, 0])}

  first = tfds_source.cached_arrays(folder, {"k": 1}, build)
  second = tfds_source.cached_arrays(folder, {"k": 1}, build)
  assert len(calls) == 1
  assert sorted(second) == ["inputs", "targets"] and isinstance(second["inputs"], np.memmap)
  np.testing.assert_array_equal(first["inputs"], np.arange(12).reshape(3, 4))
  assert second["inputs"].dtype == np.uint8
  with pytest.raises(ValueError, match="read-only"):
    second["inputs"][0, 0] = 5
  assert [p.name for p in tmp_path.iterdir()] == ["cache-x"]  # no temporary folder left


def test_a_failed_build_or_save_leaves_no_folder(tmp_path, monkeypatch):
  folder = tmp_path / "cache-x"

  def failing_build():
    raise RuntimeError("TFDS broke")

  with pytest.raises(RuntimeError, match="TFDS broke"):
    tfds_source.cached_arrays(folder, {}, failing_build)
  real_save = np.save

  def save_then_fail(path, array):
    real_save(path, array)
    raise OSError("No space left on device")

  monkeypatch.setattr(np, "save", save_then_fail)
  with pytest.raises(OSError, match="No space left"):
    tfds_source.cached_arrays(folder, {}, lambda: {"a": np.zeros(3)})
  assert list(tmp_path.iterdir()) == []


def test_a_cache_another_process_finished_first_is_kept(tmp_path):
  folder = tmp_path / "cache-x"

  def build_while_another_process_finishes():
    tfds_source.cached_arrays(folder, {"who": "other"}, lambda: {"a": np.full(2, 7)})
    return {"a": np.full(2, 1)}

  arrays = tfds_source.cached_arrays(folder, {"who": "me"}, build_while_another_process_finishes)
  assert arrays["a"].tolist() == [7, 7]
  assert '"other"' in (folder / "key.json").read_text()
  assert [p.name for p in tmp_path.iterdir()] == ["cache-x"]
