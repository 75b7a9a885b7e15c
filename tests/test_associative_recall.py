"""lra/associative_recall.py: k1 v1 .. kN vN q a sequences, the answer is the value paired with
the query key and the only weighted target, keys and values distinct and uniform, determinism,
errors naming the config field."""
import collections

import numpy as np
import pytest

from configs import base_associative_recall
from lra import associative_recall
from lra.tasks import load_task


def config(preset="tiny", **data):
  config = base_associative_recall.get_config(preset)
  for key, value in data.items():
    config.data[key] = value
  return config


def test_sequences_and_the_answer():
  n, keys, values = 5, 7, 6
  task = load_task(config(num_pairs=n, num_keys=keys, num_values=values, num_train=300))
  assert task.mode == "lm" and task.vocab_size == task.num_classes == 1 + keys + values
  assert task.max_length == 2 * n + 2  # follows num_pairs
  split = task.splits["train"]
  assert split.inputs.shape == split.targets.shape == split.weights.shape == (300, 2 * n + 2)
  assert (split.lengths == 2 * n + 2).all()
  for row, target, weight in zip(split.inputs.tolist(), split.targets.tolist(),
                                 split.weights.tolist()):
    ks, vs, query, answer = row[0:2 * n:2], row[1:2 * n:2], row[2 * n], row[2 * n + 1]
    assert all(1 <= k <= keys for k in ks) and len(set(ks)) == n
    assert all(keys < v <= keys + values for v in vs) and len(set(vs)) == n
    assert query in ks and answer == vs[ks.index(query)]
    assert target == row[1:] + [0]  # the token after each input
    assert weight == [False] * (2 * n) + [True, False]
    assert target[2 * n] == answer
  batch = split.batch(np.arange(3))
  assert set(batch) == {"inputs", "mask", "targets", "weights"} and batch["mask"].all()


def test_query_position_is_uniform():
  split = load_task(config(num_pairs=4, num_keys=8, num_values=8, num_train=4000)).splits["train"]
  inputs = np.asarray(split.inputs)
  which = (inputs[:, 0:8:2] == inputs[:, [8]]).argmax(1)
  counts = np.bincount(which, minlength=4) / len(which)
  np.testing.assert_allclose(counts, 0.25, atol=0.03)


@pytest.mark.parametrize("pool", [4, 9])  # the dense (permutation) and sparse (rejection) paths
def test_distinct_draws_are_uniform_over_ordered_tuples(pool):
  draws = associative_recall._distinct(np.random.default_rng(0), 30_000, pool, 2)
  assert (draws[:, 0] != draws[:, 1]).all() and draws.min() >= 0 and draws.max() < pool
  counts = collections.Counter(map(tuple, draws.tolist()))
  assert len(counts) == pool * (pool - 1)
  freq = np.array(list(counts.values())) / len(draws)
  np.testing.assert_allclose(freq, 1 / (pool * (pool - 1)), rtol=0.2)


def test_deterministic_for_the_seed():
  a, b, c = load_task(config()), load_task(config()), load_task(config(seed=3))
  for name in ("train", "validation", "test"):
    np.testing.assert_array_equal(a.splits[name].inputs, b.splits[name].inputs)
  assert not np.array_equal(a.splits["train"].inputs, c.splits["train"].inputs)
  assert not np.array_equal(a.splits["validation"].inputs, a.splits["test"].inputs)


@pytest.mark.parametrize("data,match", [
    ({"num_keys": 2}, r"config.data.num_keys=2 is smaller than config.data.num_pairs=3"),
    ({"num_values": 1}, r"config.data.num_values=1 is smaller"),
    ({"num_pairs": 0}, r"config.data.num_pairs=0"),
    ({"max_length": 9}, r"config.data.max_length=9; .* = 8 tokens"),
    ({"num_test": 0}, r"config.data.num_test=0"),
])
def test_errors_name_the_field(data, match):
  with pytest.raises(ValueError, match=match):
    load_task(config(**data))


def test_model_fields_of_the_decoder():
  model = base_associative_recall.get_config("quick").model
  assert model.causal is True and model.tie_embeddings is False
  assert model.xl_memory_length == 0 and model.xl_segment_length == 0
  assert "num_decoder_layers" not in model
