"""LRA Retrieval: the release TSV reader (byte ids, truncation, layouts, file:line errors,
blank lines and empty splits rejected, streamed memmap cache that a failed parse leaves no
trace of), the synthetic pair generator, and a tiny end-to-end run."""
import re

import numpy as np
import pytest

from configs import transformer_retrieval
from lra import retrieval
from lra.tasks import load_task

ROWS = {"train": [("1.0", "a1", "b1", "hello world", "h\u00e9llo"),
                  ("0.0", "a2", "b2", "x" * 20, ""),
                  ("1.0", "a3", "b3", "tab-free text", "another one")],
        "validation": [("0.0", "c1", "d1", "eval one", "eval two")],
        "test": [("1.0", "e1", "f1", "t", "u"), ("0.0", "e2", "f2", "v", "w")]}


def write_release(folder, rows=ROWS):
  folder.mkdir(parents=True, exist_ok=True)
  for split, name in retrieval.SPLIT_FILES.items():
    body = "".join("\t".join(row) + "\n" for row in rows[split])
    (folder / name).write_bytes(body.encode())
  return folder


def config_for(tmp_path, data_dir="", max_length=8, preset="tiny"):
  config = transformer_retrieval.get_config(preset)
  with config.unlocked():
    config.cache_dir = str(tmp_path / "cache")
    config.data_dir = str(data_dir)
    config.data.max_length = max_length
  return config


def ids(text):
  return [b + 1 for b in text.encode()]


def test_reads_release_rows_as_byte_pairs(tmp_path):
  write_release(tmp_path / "tsv_data")
  task = load_task(config_for(tmp_path, tmp_path))
  assert task.pair and task.vocab_size == 257 and task.num_classes == 2
  assert task.sizes() == {"train": 3, "validation": 1, "test": 2}
  train = task.splits["train"]
  assert train.targets.tolist() == [1, 0, 1]
  assert train.inputs[0].tolist() == ids("hello wo")  # cut to max_length=8
  assert train.inputs2[0].tolist() == ids("h\u00e9llo") + [0, 0]  # 6 bytes, padded
  assert train.lengths.tolist() == [8, 8, 8] and train.lengths2.tolist() == [6, 0, 8]
  batch = train.batch(np.array([1, 0]))
  assert batch["mask2"].sum(1).tolist() == [0, 6]
  assert batch["inputs2"].dtype == np.int32 and set(batch) == {"inputs", "mask", "inputs2",
                                                               "mask2", "targets"}
  assert isinstance(train.inputs, np.memmap)
  assert task.splits["validation"].inputs[0].tolist() == ids("eval one")


@pytest.mark.parametrize("layout", ["", "tsv_data", "lra_release/tsv_data",
                                    "lra_release/lra_release/tsv_data"])
def test_known_layouts(tmp_path, layout):
  write_release(tmp_path / "data" / layout)
  assert retrieval.find_release_dir(tmp_path / "data") == tmp_path / "data" / layout


def test_missing_release_says_how_to_get_it(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"lra\.prepare --tasks=retrieval"):
    retrieval.find_release_dir(tmp_path)
  base = config_for(tmp_path, preset=None, max_length=4000)
  with pytest.raises(FileNotFoundError, match="config.data_dir"):
    load_task(base)  # the LRA config never falls back to synthetic data silently


@pytest.mark.parametrize("bad_line,message", [
    ("1.0\ta\tb\tonly four", "expected 5 tab-separated fields"),
    ("1.0\ta\tb\tc\td\te", "expected 5 tab-separated fields"),
    ("2.0\ta\tb\tc\td", "label must be 0 or 1"),
    ("yes\ta\tb\tc\td", "label must be 0 or 1")])
def test_malformed_row_names_file_and_line(tmp_path, bad_line, message):
  rows = dict(ROWS)
  rows["validation"] = ROWS["validation"] + [tuple(bad_line.split("\t"))]
  folder = write_release(tmp_path / "tsv_data", rows)
  path = folder / "new_aan_pairs.eval.tsv"
  with pytest.raises(ValueError, match=re.escape(f"{path}:2: {message}")):
    load_task(config_for(tmp_path, tmp_path))


@pytest.mark.parametrize("body,line", [
    (b"1.0\ta\tb\tc\td\n\n0.0\ta\tb\tc\td\n", 2),   # blank line between rows
    (b"1.0\ta\tb\tc\td\n\t \r\n", 2),                  # whitespace only
    (b"1.0\ta\tb\tc\td\n\n", 2)])                        # trailing blank line
def test_blank_line_is_an_error_naming_file_and_line(tmp_path, body, line):
  folder = write_release(tmp_path / "tsv_data")
  path = folder / "new_aan_pairs.test.tsv"
  path.write_bytes(body)
  with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: blank line")):
    load_task(config_for(tmp_path, tmp_path))


def test_failed_parse_removes_its_temporary_folder(tmp_path):
  """The train and eval files parse into the temporary folder, the test file fails at line 3:
  the error names file and line, and nothing is left under the cache (a real failure would
  leave gigabytes)."""
  rows = dict(ROWS)
  rows["test"] = ROWS["test"] + [("1.0", "e3", "f3", "no fifth field")]
  folder = write_release(tmp_path / "tsv_data", rows)
  with pytest.raises(ValueError, match=re.escape(
      f"{folder / 'new_aan_pairs.test.tsv'}:3: expected 5 tab-separated fields")):
    load_task(config_for(tmp_path, tmp_path))
  assert list((tmp_path / "cache" / "retrieval").iterdir()) == []


def test_empty_split_file_is_an_error_naming_it(tmp_path):
  folder = write_release(tmp_path / "tsv_data")
  path = folder / "new_aan_pairs.eval.tsv"
  path.write_bytes(b"")
  with pytest.raises(ValueError, match=re.escape(f"{path}: no rows (split 'validation')")):
    load_task(config_for(tmp_path, tmp_path))
  assert list((tmp_path / "cache" / "retrieval").iterdir()) == []


def test_byte_255_widens_ids_and_cache_is_reused(tmp_path):
  folder = write_release(tmp_path / "tsv_data")
  path = folder / "new_aan_pairs.test.tsv"
  path.write_bytes(b"1.0\ta\tb\t\xff\x00z\tq\n" + path.read_bytes())
  config = config_for(tmp_path, tmp_path, max_length=4)
  task = load_task(config)
  test = task.splits["test"]
  assert test.inputs.dtype == np.uint16 and test.inputs[0].tolist() == [256, 1, ord("z") + 1, 0]
  assert task.splits["train"].inputs.dtype == np.uint8
  caches = sorted((tmp_path / "cache" / "retrieval").glob("cache-*"))
  load_task(config)
  assert sorted((tmp_path / "cache" / "retrieval").glob("cache-*")) == caches
  path.write_bytes(path.read_bytes() + b"0.0\ta\tb\tc\td\n")  # a changed file is re-read
  assert len(load_task(config).splits["test"]) == 4


def test_synthetic_pairs_in_release_format(tmp_path):
  config = config_for(tmp_path, max_length=48)
  params = retrieval.synthetic_params(config.data)
  out = retrieval.generate_synthetic(params, tmp_path / "a")
  again = retrieval.generate_synthetic(params, tmp_path / "b")
  train = (out / "new_aan_pairs.train.tsv").read_text()
  assert train == (again / "new_aan_pairs.train.tsv").read_text()  # deterministic
  key = re.compile(r"\([A-Z][a-z]+ \d{4}\)")
  labels = []
  for line in train.splitlines():
    label, id1, id2, text1, text2 = line.split("\t")
    assert label in ("0.0", "1.0") and id1 != id2
    keys1, keys2 = set(key.findall(text1)), set(key.findall(text2))
    assert len(keys1) == len(keys2) == params["num_citations"]
    assert len(keys1 & keys2) == (label == "1.0")  # positives share exactly one key
    labels.append(label == "1.0")
  assert len(labels) == params["num_train"] and 0.35 < np.mean(labels) < 0.65
  task = load_task(config)  # tiny preset: synthetic pairs when there is no release
  assert "SYNTHETIC" in task.notes and task.sizes()["train"] == params["num_train"]


def test_tiny_end_to_end_on_synthetic_pairs(tmp_path):
  from train import train_and_evaluate  # pylint: disable=import-outside-toplevel
  config = config_for(tmp_path, max_length=48)
  results = train_and_evaluate(config, tmp_path / "run")
  assert results["steps"] == 12 and results["task"] == "retrieval"
  assert results["splits"]["test"]["examples"] == 64
  assert 0.0 <= results["splits"]["test"]["accuracy"] <= 1.0
