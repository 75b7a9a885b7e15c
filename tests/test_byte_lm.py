"""lra/byte_lm.py: next-byte windows (inputs, targets shifted by one, weights on real bytes),
disjoint contiguous splits that cover a text file, the default text (CPython's pydoc topics),
TFDS text under mock data (and its cache), and errors naming the file or field."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base_byte_lm
from lra import byte_lm
from lra.tasks import load_task


def config(tmp_path=None, preset="tiny", **data):
  config = base_byte_lm.get_config(preset)
  with config.unlocked():
    if tmp_path is not None:
      config.cache_dir = str(tmp_path / "cache")
      config.data_dir = str(tmp_path / "tfds")
    for key, value in data.items():
      config.data[key] = value
  return config


def real_bytes(split):
  """The bytes a split covers: its first input byte, then every real target in order."""
  inputs, targets = np.asarray(split.inputs), np.asarray(split.targets)
  out = [int(inputs[0, 0]) - 1]
  for i, n in enumerate(split.lengths.tolist()):
    assert split.weights[i].tolist() == [True] * n + [False] * (inputs.shape[1] - n)
    assert (inputs[i, n:] == 0).all() and (targets[i, n:] == 0).all()
    out += (targets[i, :n] - 1).tolist()
  return bytes(out)


def test_windows():
  split = byte_lm.windows(b"abcdefghij", 4, "train", "test text")
  assert split.lengths.tolist() == [4, 4, 1]  # 9 next-byte predictions
  assert split.inputs.tolist() == [[98, 99, 100, 101], [102, 103, 104, 105], [106, 0, 0, 0]]
  assert split.targets.tolist() == [[99, 100, 101, 102], [103, 104, 105, 106], [107, 0, 0, 0]]
  np.testing.assert_array_equal(split.targets[:2, :-1], split.inputs[:2, 1:])  # full windows
  assert real_bytes(split) == b"abcdefghij"
  batch = split.batch(np.array([2, 0]))
  assert batch["targets"].tolist()[0] == [107, 0, 0, 0]
  assert batch["mask"].tolist()[0] == batch["weights"].tolist()[0] == [True, False, False, False]
  full = byte_lm.windows(bytes(range(256)) + b"\x00", 256, "train", "all bytes")
  assert full.inputs.max() == 256 and full.targets[0, -1] == 1  # byte 255 -> 256, 0 -> 1
  with pytest.raises(ValueError, match=r"test text: split 'train' has 1 byte\(s\)"):
    byte_lm.windows(b"a", 4, "train", "test text")


def test_text_file_splits_are_disjoint_contiguous_spans(tmp_path):
  text = "".join(f"line {i}: caf\u00e9 {i * i}\n" for i in range(300)).encode()
  path = tmp_path / "corpus.txt"
  path.write_bytes(text)
  task = load_task(config(text_file=str(path), max_length=16))
  assert task.mode == "lm" and task.token_unit == "byte"
  assert task.vocab_size == task.num_classes == 257 and task.max_length == 16
  spans = [real_bytes(task.splits[name]) for name in ("train", "validation", "test")]
  assert b"".join(spans) == text  # in order, no byte twice, none lost
  assert abs(len(spans[0]) - 0.9 * len(text)) <= 1 and abs(len(spans[1]) - 0.05 * len(text)) <= 1
  assert str(path) in task.notes


def test_split_fractions(tmp_path):
  path = tmp_path / "t.txt"
  path.write_bytes(bytes(range(32, 132)))
  task = load_task(config(text_file=str(path), split_fractions=(0.5, 0.25, 0.25)))
  assert [len(real_bytes(task.splits[n])) for n in ("train", "validation", "test")] == [50, 25, 25]
  with pytest.raises(ValueError, match=r"config.data.split_fractions=\(0.5, 0.6, 0.1\)"):
    load_task(config(text_file=str(path), split_fractions=(0.5, 0.6, 0.1)))
  path.write_bytes(b"abcdefghij")  # 10 bytes: validation would get 0
  with pytest.raises(ValueError, match=r"has 10 bytes: too few .*split 'validation' gets 0"):
    load_task(config(text_file=str(path), split_fractions=(0.9, 0.01, 0.09)))


def test_missing_or_empty_text_file_is_an_error_naming_it(tmp_path):
  missing = tmp_path / "nope.txt"
  with pytest.raises(FileNotFoundError, match=f"config.data.text_file='{missing}': no such file"):
    load_task(config(text_file=str(missing)))
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match=f"config.data.text_file='{empty}' is empty"):
    load_task(config(text_file=str(empty)))
  with pytest.raises(ValueError, match="both set"):
    load_task(config(text_file=str(empty), tfds_name="tiny_shakespeare"))


def test_default_text_is_cpythons_pydoc_topics():
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  task = load_task(config(max_length=64))
  text = byte_lm.default_text()
  assert len(text) > 300_000 and topics.topics["if"].encode() in text
  spans = [real_bytes(task.splits[name]) for name in ("train", "validation", "test")]
  assert b"".join(spans) == text
  assert "pydoc_data.topics" in task.notes
  assert len(task.splits["validation"]) == -(-(len(spans[1]) - 1) // 64)


SHAKESPEARE = {"train": ["First Citizen:\nBefore we proceed", "any further, hear me."],
               "validation": ["All:\nSpeak, speak."], "test": ["\u00e9t\u00e9 -- ok"]}


def fake_text(self, split, **kwargs):
  del self, kwargs
  return tf.data.Dataset.from_tensor_slices({"text": SHAKESPEARE[str(split)]})


def test_tfds_text_and_its_cache(tmp_path):
  cfg = config(tmp_path, tfds_name="tiny_shakespeare", max_length=8)
  with tfds.testing.mock_data(as_dataset_fn=fake_text):
    task = load_task(cfg)
  for name, docs in SHAKESPEARE.items():
    assert real_bytes(task.splits[name]) == "\n".join(docs).encode()
  assert "TFDS tiny_shakespeare" in task.notes
  cached = load_task(cfg)  # served from the .npy cache: no TFDS needed now
  np.testing.assert_array_equal(cached.splits["train"].targets, task.splits["train"].targets)


def test_tfds_errors_name_the_field(tmp_path):
  with tfds.testing.mock_data(as_dataset_fn=fake_text):
    with pytest.raises(ValueError, match=r"no feature 'content' \(config.data.tfds_text_feature"):
      load_task(config(tmp_path, tfds_name="tiny_shakespeare", tfds_text_feature="content"))
  assert not list((tmp_path / "cache").rglob("*.npy"))
  with pytest.raises(FileNotFoundError, match=r"'tiny_shakespeare' \(config.data.tfds_name\) "
                     rf"is not prepared in {tmp_path / 'tfds'}"):
    load_task(config(tmp_path, tfds_name="tiny_shakespeare"))


def test_model_fields_of_the_decoder():
  model = base_byte_lm.get_config("quick").model
  assert model.causal is True and model.tie_embeddings is False
  assert model.xl_memory_length == 0 and model.xl_segment_length == 0
