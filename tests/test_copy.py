"""lra/copy.py: the encoder-decoder copy task's layout (source, BOS-shifted decoder inputs,
targets + EOS, weights), reversal, determinism and errors naming the config field."""
import numpy as np
import pytest

from configs import base_copy
from lra import copy as copy_task
from lra.tasks import load_task


def config(preset="tiny", **data):
  config = base_copy.get_config(preset)
  for key, value in data.items():
    config.data[key] = value
  return config


def rows(split):
  """(source, target) token lists per row, read through the padding."""
  for i in range(len(split)):
    n = int(split.lengths[i])
    yield split.inputs[i, :n].tolist(), split.targets[i].tolist(), n


@pytest.mark.parametrize("reverse", [False, True])
def test_layout(reverse):
  task = load_task(config(reverse=reverse, min_length=1, max_length=6, num_symbols=4,
                          num_train=200))
  assert task.mode == "seq2seq" and task.vocab_size == task.num_classes == 3 + 4
  assert task.max_length == 6
  split = task.splits["train"]
  assert split.inputs.shape == (200, 6)
  assert split.inputs2.shape == split.targets.shape == split.weights.shape == (200, 7)
  assert sorted(set(split.lengths.tolist())) == [1, 2, 3, 4, 5, 6]  # uniform in [min, max]
  for i, (source, target, n) in enumerate(rows(split)):
    assert all(3 <= s < 7 for s in source)
    assert (split.inputs[i, n:] == 0).all()
    body = source[::-1] if reverse else source
    assert target == body + [copy_task.EOS] + [0] * (6 - n)
    assert split.weights[i].tolist() == [True] * (n + 1) + [False] * (6 - n)
    # decoder inputs: the targets shifted right behind BOS, over the n + 1 real positions
    assert split.lengths2[i] == n + 1
    assert split.inputs2[i].tolist() == [copy_task.BOS] + body + [0] * (6 - n)
  batch = split.batch(np.arange(4))
  assert set(batch) == {"inputs", "mask", "inputs2", "mask2", "targets", "weights"}
  assert batch["targets"].dtype == np.int32 and batch["weights"].dtype == bool
  np.testing.assert_array_equal(batch["mask"].sum(1), split.lengths[:4])
  np.testing.assert_array_equal(batch["mask2"], batch["weights"])


def test_reverse_is_the_copy_reversed():
  plain, reverse = (load_task(config(reverse=r)).splits["test"] for r in (False, True))
  np.testing.assert_array_equal(plain.inputs, reverse.inputs)  # same sources
  for (source, target, n), (_, target_r, _) in zip(rows(plain), rows(reverse)):
    assert target[:n] == source and target_r[:n] == source[::-1]


def test_deterministic_for_the_seed_and_distinct_per_split():
  a, b = load_task(config()), load_task(config())
  for name in ("train", "validation", "test"):
    np.testing.assert_array_equal(a.splits[name].inputs, b.splits[name].inputs)
    np.testing.assert_array_equal(a.splits[name].targets, b.splits[name].targets)
  c = load_task(config(seed=1))
  assert not np.array_equal(a.splits["train"].inputs, c.splits["train"].inputs)
  assert not np.array_equal(a.splits["validation"].inputs, a.splits["test"].inputs)


@pytest.mark.parametrize("field,value,match", [
    ("min_length", 9, "config.data.min_length=9"),
    ("min_length", 0, "config.data.min_length=0"),
    ("num_symbols", 0, "config.data.num_symbols=0"),
    ("num_val", 0, "config.data.num_val=0"),
])
def test_errors_name_the_field(field, value, match):
  with pytest.raises(ValueError, match=match):
    load_task(config(**{field: value}))


def test_model_fields_of_the_encoder_decoder():
  model = base_copy.get_config("quick").model
  assert model.causal is False  # the encoder; the model makes the decoder causal
  assert model.num_decoder_layers == model.num_layers == 2  # follows num_layers
  assert model.cross_attention == "transformer" and not model.cross_attention_kwargs
  assert model.tie_embeddings is False
  full = base_copy.get_config()
  full.model.num_decoder_layers = 3  # set itself: no longer follows, and num_layers stays
  assert (full.model.num_layers, full.model.num_decoder_layers) == (4, 3)
  assert "xl_memory_length" not in model  # Transformer-XL is an LM option
