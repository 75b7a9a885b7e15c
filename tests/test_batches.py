"""lra.batches: the train stream (a fresh permutation each epoch, deterministic for a seed,
resumable at any step), the too-small-split error, evaluation batches (in order, once, the last
one padded with `valid` False on exactly the padded rows), pair fields, and the Split/TaskData
checks. Every example's row index is stored as its target, so a batch says which rows it holds."""
import itertools

import numpy as np
import pytest

from lra import batches
from lra.batches import Split, TaskData


def indexed_split(n, max_len=6, pair=False, name="train"):
  """Row i: tokens i+1 repeated over length (i % max_len) + 1, target i."""
  lengths = np.arange(n) % max_len + 1
  inputs = np.zeros((n, max_len), np.int64)
  for i, length in enumerate(lengths):
    inputs[i, :length] = i + 1
  extra = {}
  if pair:
    lengths2 = (np.arange(n) * 2) % max_len + 1
    inputs2 = np.zeros((n, max_len), np.int16)
    for i, length in enumerate(lengths2):
      inputs2[i, :length] = 1000 + i
    extra = {"inputs2": inputs2, "lengths2": lengths2}
  return Split(name, inputs, lengths, np.arange(n), source="built in tests", **extra)


def take(iterator, count):
  return list(itertools.islice(iterator, count))


def epochs(stream, steps_per_epoch, count):
  """The targets (= row ids) each epoch of `stream` visits, in order."""
  rows = [b["targets"] for b in take(stream, steps_per_epoch * count)]
  return [np.concatenate(rows[e * steps_per_epoch:(e + 1) * steps_per_epoch])
          for e in range(count)]


def test_each_epoch_is_a_new_permutation_of_the_whole_split():
  split = indexed_split(24)
  first, second, third = epochs(batches.train_batches(split, 6, seed=3), 4, 3)
  for order in (first, second, third):
    assert sorted(order.tolist()) == list(range(24))  # every example exactly once
  assert first.tolist() != second.tolist()  # reshuffled between epochs
  assert second.tolist() != third.tolist()
  assert first.tolist() != list(range(24))  # shuffled at all


def test_uneven_split_each_epoch_draws_distinct_rows():
  split = indexed_split(10)  # batch 4: 2 steps per epoch, 2 rows left out, differently each epoch
  orders = epochs(batches.train_batches(split, 4, seed=0), 2, 6)
  for order in orders:
    assert len(order) == len(set(order.tolist())) == 8
  assert len({tuple(o.tolist()) for o in orders}) == 6
  assert set(np.concatenate(orders).tolist()) == set(range(10))  # no row is never seen


def test_same_seed_same_stream_other_seed_other_stream():
  split = indexed_split(20)
  stream = lambda seed: [b["targets"].tolist() for b in take(
      batches.train_batches(split, 5, seed=seed), 12)]
  assert stream(7) == stream(7)
  assert stream(7) != stream(8)


def test_resuming_at_a_step_continues_the_same_stream():
  split = indexed_split(20)
  whole = take(batches.train_batches(split, 5, seed=1), 11)
  resumed = take(batches.train_batches(split, 5, seed=1, start_step=6), 5)
  for a, b in zip(whole[6:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_train_batch_contents_match_the_rows():
  split = indexed_split(12, max_len=6)
  batch = next(batches.train_batches(split, 4, seed=2))
  assert batch["inputs"].dtype == np.int32 and batch["inputs"].shape == (4, 6)
  assert batch["mask"].dtype == bool and batch["targets"].dtype == np.int32
  for row, target in enumerate(batch["targets"]):
    length = target % 6 + 1
    assert batch["mask"][row].tolist() == [True] * length + [False] * (6 - length)
    assert batch["inputs"][row].tolist() == [target + 1] * length + [0] * (6 - length)
  assert "inputs2" not in batch and "valid" not in batch


def test_split_smaller_than_a_batch_is_an_error_naming_both_sizes():
  split = indexed_split(5, name="validation")
  with pytest.raises(ValueError, match=r"split 'validation' has 5 examples, fewer than "
                     r"batch size 8"):
    next(batches.train_batches(split, 8, seed=0))
  assert len(next(batches.train_batches(split, 5, seed=0))["targets"]) == 5  # equal is enough


def test_eval_batches_cover_the_split_in_order_once_with_the_last_padded():
  split = indexed_split(11)
  out = list(batches.eval_batches(split, 4))
  assert len(out) == 3
  for batch in out:
    assert batch["inputs"].shape == (4, 6) and batch["targets"].shape == (4,)
    assert batch["valid"].dtype == bool and batch["valid"].shape == (4,)
  assert [b["valid"].tolist() for b in out] == [[True] * 4, [True] * 4,
                                                 [True, True, True, False]]
  real = np.concatenate([b["targets"][b["valid"]] for b in out])
  assert real.tolist() == list(range(11))


def test_eval_batches_exact_multiple_has_no_padding_and_max_batches_stops_early():
  split = indexed_split(12)
  out = list(batches.eval_batches(split, 4))
  assert len(out) == 3 and all(b["valid"].all() for b in out)
  assert [b["targets"].tolist() for b in batches.eval_batches(split, 4, max_batches=2)] == [
      [0, 1, 2, 3], [4, 5, 6, 7]]
  assert len(list(batches.eval_batches(split, 4, max_batches=0))) == 3  # 0: the whole split


def test_eval_split_smaller_than_a_batch_is_one_padded_batch():
  (batch,) = batches.eval_batches(indexed_split(2), 5)
  assert batch["valid"].tolist() == [True, True, False, False, False]
  assert batch["targets"][:2].tolist() == [0, 1] and batch["inputs"].shape == (5, 6)


def test_pair_tasks_carry_inputs2_and_mask2():
  split = indexed_split(7, max_len=6, pair=True)
  train = next(batches.train_batches(split, 3, seed=0))
  (*_, last) = batches.eval_batches(split, 3)
  for batch in (train, last):
    assert batch["inputs2"].dtype == np.int32 and batch["inputs2"].shape == (3, 6)
    assert batch["mask2"].dtype == bool
    for row, target in enumerate(batch["targets"]):
      length2 = (target * 2) % 6 + 1
      assert batch["mask2"][row].tolist() == [True] * length2 + [False] * (6 - length2)
      assert batch["inputs2"][row, :length2].tolist() == [1000 + target] * length2
      assert batch["mask"][row].sum() == target % 6 + 1  # the first text's own mask
  assert last["valid"].tolist() == [True, False, False]


def test_pad_rows_truncates_and_reports_lengths():
  out, lengths = batches.pad_rows([[5, 6, 7], [], [1, 2, 3, 4, 5, 6]], 4, dtype=np.uint8)
  assert out.dtype == np.uint8 and lengths.tolist() == [3, 0, 4]
  assert out.tolist() == [[5, 6, 7, 0], [0, 0, 0, 0], [1, 2, 3, 4]]


def test_split_rows_must_agree_and_empty_splits_are_an_error():
  with pytest.raises(ValueError, match=r"split 'x': lengths has 2 rows, targets 3"):
    Split("x", np.zeros((3, 2)), np.zeros(2), np.zeros(3))
  empty = Split("test", np.zeros((0, 2)), np.zeros(0), np.zeros(0), source="/data/t.tsv")
  with pytest.raises(ValueError, match=r"split 'test' has no examples \(from /data/t.tsv\)"):
    TaskData("demo", {"train": indexed_split(3), "test": empty}, 10, 2, 6)


def test_describe_names_sizes_and_skipped_examples():
  task = TaskData("demo", {"train": indexed_split(1200), "test": indexed_split(3)}, 10, 2, 6,
                  pair=True, skipped={"empty_png_files": {"train": 2, "test": 1}})
  assert task.describe() == ("task demo: train=1,200, test=3; vocab 10, 2 classes, length 6, "
                             "pair; skipped 3 empty png files (train=2, test=1)")
