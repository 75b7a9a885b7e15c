"""lra.pipeline: the Grain training stream gives `train_batches`' batches (across an epoch
boundary), split into host shards that concatenate to the global batch; its state resumes
exactly (threads, and one worker process), also through Grain's Orbax handler in a real
CheckpointManager and behind a device look-ahead (ConsumedState); start_step equals skipping;
evaluation shards sum to the single-host totals; device_prefetch keeps order and looks ahead;
the errors name their numbers. Every example's row index is stored as its target, so a batch
says which rows it holds."""
import itertools
import pickle

import numpy as np
import orbax.checkpoint as ocp
import pytest

from lra import batches, pipeline
from tests.test_batches import indexed_split

KEYS = ("inputs", "mask", "targets")
PAIR_KEYS = KEYS + ("inputs2", "mask2")


def take(iterator, count):
  return list(itertools.islice(iterator, count))


def assert_batches_equal(got, want, keys=KEYS):
  assert len(got) == len(want)
  for step, (a, b) in enumerate(zip(got, want)):
    assert sorted(a) == sorted(keys), step
    for key in keys:
      assert a[key].dtype == b[key].dtype, (step, key)
      np.testing.assert_array_equal(a[key], b[key], err_msg=f"step {step}, {key}")


@pytest.fixture(name="split")
def fixture_split():
  return indexed_split(20, pair=True)  # batch 6: 3 steps per epoch, 2 rows left out per epoch


def test_batches_equal_train_batches_across_epoch_boundaries(split):
  got = take(pipeline.train_input(split, 6, seed=3), 8)  # epochs 0, 1 and part of 2
  assert_batches_equal(got, take(batches.train_batches(split, 6, seed=3), 8), PAIR_KEYS)
  epochs = [np.concatenate([b["targets"] for b in got[e * 3:(e + 1) * 3]]) for e in range(2)]
  assert all(len(set(e.tolist())) == 18 for e in epochs)  # each epoch: 18 distinct rows
  assert epochs[0].tolist() != epochs[1].tolist()       # reshuffled at the boundary
  for batch in got:  # the rows' own tokens, masks and lengths (row i: tokens i+1, length i%6+1)
    rows = batch["targets"]
    np.testing.assert_array_equal(batch["mask"].sum(1), rows % 6 + 1)
    np.testing.assert_array_equal(batch["inputs"][:, 0], rows + 1)
    np.testing.assert_array_equal(batch["inputs2"][:, 0], 1000 + rows)


def test_other_seed_other_stream(split):
  first = [b["targets"].tolist() for b in take(pipeline.train_input(split, 6, seed=0), 3)]
  other = [b["targets"].tolist() for b in take(pipeline.train_input(split, 6, seed=1), 3)]
  assert first != other


@pytest.mark.parametrize("count", [2, 3])
def test_host_shards_concatenate_to_the_global_batch(split, count):
  whole = take(pipeline.train_input(split, 6, seed=5), 5)
  shards = [take(pipeline.train_input(split, 6, seed=5, process_index=p, process_count=count),
                 5) for p in range(count)]
  for step, batch in enumerate(whole):
    for p in range(count):  # host p holds rows [p*B/P, (p+1)*B/P)
      assert len(shards[p][step]["targets"]) == 6 // count
    for key in PAIR_KEYS:
      np.testing.assert_array_equal(
          np.concatenate([shards[p][step][key] for p in range(count)]), batch[key])


def test_start_step_equals_skipping(split):
  whole = take(pipeline.train_input(split, 6, seed=2), 9)
  started = pipeline.train_input(split, 6, seed=2, start_step=4)
  assert started.next_step == 4
  assert_batches_equal(take(started, 5), whole[4:], PAIR_KEYS)
  assert started.get_state()["next_step"] == 9


def test_num_steps_ends_the_stream(split):
  assert [b["targets"].tolist() for b in pipeline.train_input(split, 6, seed=2, num_steps=4)
          ] == [b["targets"].tolist() for b in take(batches.train_batches(split, 6, 2), 4)]


@pytest.mark.parametrize("k", [2, 3, 4])  # mid-epoch, at the boundary, just past it
def test_state_resumes_exactly_with_threads(split, k):
  whole = take(pipeline.train_input(split, 6, seed=7, threads=2, prefetch=3), k + 4)
  it = pipeline.train_input(split, 6, seed=7, threads=2, prefetch=3)
  take(it, k)
  state = it.get_state()
  assert state["next_step"] == k
  it.close()
  fresh = pipeline.train_input(split, 6, seed=7, threads=1, prefetch=1)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 4), whole[k:], PAIR_KEYS)
  # a state is absolute: restoring into an iterator built at another start_step still resumes
  other = pipeline.train_input(split, 6, seed=7, start_step=1)
  next(other)
  other.set_state(state)
  assert_batches_equal(take(other, 2), whole[k:k + 2], PAIR_KEYS)


def test_state_resumes_exactly_with_a_worker_process(split):
  whole = take(pipeline.train_input(split, 6, seed=7), 7)
  it = pipeline.train_input(split, 6, seed=7, workers=1, process_index=1, process_count=2)
  try:
    first = take(it, 2)
    state = it.get_state()
  finally:
    it.close()
  for step, batch in enumerate(first):
    np.testing.assert_array_equal(batch["targets"], whole[step]["targets"][3:])
  fresh = pipeline.train_input(split, 6, seed=7, workers=0, process_index=1, process_count=2)
  fresh.set_state(state)  # a worker count is not part of the state
  for step, batch in enumerate(take(fresh, 5), start=2):  # across the boundary at step 3
    for key in PAIR_KEYS:
      np.testing.assert_array_equal(batch[key], whole[step][key][3:])


def test_state_from_another_stream_is_refused(split):
  state = pipeline.train_input(split, 6, seed=7).get_state()
  with pytest.raises(ValueError, match=r"seed saved 7, now 8"):
    pipeline.train_input(split, 6, seed=8).set_state(state)
  with pytest.raises(ValueError, match=r"global_batch_size saved 6, now 4"):
    pipeline.train_input(split, 4, seed=7).set_state(state)


def test_orbax_round_trip_in_a_checkpoint_manager(split, tmp_path):
  whole = take(pipeline.train_input(split, 6, seed=1), 8)
  it = pipeline.train_input(split, 6, seed=1, threads=2, prefetch=4)
  consumed = pipeline.ConsumedState(it)
  stream = pipeline.device_prefetch(consumed, lambda b: b, size=3)  # reads 2 batches ahead
  manager = ocp.CheckpointManager(tmp_path / "ckpt", options=ocp.CheckpointManagerOptions(
      create=True, enable_async_checkpointing=False))
  for _ in range(4):  # train on steps 0..3
    next(stream)
    consumed.advance()
  assert (it.next_step, consumed.get_state()["next_step"]) == (6, 4)
  # step 4: as train.py saves (the batches trained on); step 6: the iterator's own position
  manager.save(4, args=ocp.args.Composite(meta=ocp.args.JsonSave({"step": 4}),
                                          input=pipeline.checkpoint_save_args(consumed)))
  manager.save(6, args=ocp.args.Composite(meta=ocp.args.JsonSave({"step": 6}),
                                          input=pipeline.checkpoint_save_args(it)))
  manager.wait_until_finished()
  manager.close()
  assert it.next_step == 6  # saving did not move it
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  assert manager.all_steps() == [4, 6]
  for step in (6, 4):
    fresh = pipeline.train_input(split, 6, seed=1)
    restored = manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore(), input=pipeline.checkpoint_restore_args(fresh)))
    assert restored.input is fresh and restored.meta == {"step": step}
    assert fresh.next_step == step
    assert_batches_equal(take(fresh, 2), whole[step:step + 2], PAIR_KEYS)
  manager.close()


def test_consumed_state_cannot_pass_the_batches_read(split):
  consumed = pipeline.ConsumedState(pipeline.train_input(split, 6, seed=1, start_step=3))
  next(consumed)
  consumed.advance()
  assert consumed.get_state()["next_step"] == 4
  with pytest.raises(ValueError, match="advanced to step 5, but only batches up to step 3"):
    consumed.advance()


@pytest.mark.parametrize("count", [2, 4])
def test_eval_shards_sum_to_the_single_host_totals(count):
  split = indexed_split(22)  # batch 8: 3 batches, the last with 6 real rows and 2 padded
  whole = list(batches.eval_batches(split, 8))
  shards = [list(pipeline.eval_input(split, 8, process_index=p, process_count=count))
            for p in range(count)]
  assert all(len(s) == len(whole) == 3 for s in shards)
  for b, batch in enumerate(whole):
    for key in KEYS + ("valid",):
      np.testing.assert_array_equal(np.concatenate([s[b][key] for s in shards]), batch[key])
  # sums over valid rows (what train.evaluate adds up) agree with the single host's
  total = lambda bs: (sum(int(x["valid"].sum()) for x in bs),
                      sum(int(x["targets"][x["valid"]].sum()) for x in bs))
  assert sum(total(s)[0] for s in shards) == total(whole)[0] == 22
  assert sum(total(s)[1] for s in shards) == total(whole)[1] == sum(range(22))
  last = shards[-1][-1]  # the last host holds the padded tail of the last batch
  assert last["valid"].tolist() == {2: [True, True, False, False], 4: [False, False]}[count]


def test_eval_max_batches():
  split = indexed_split(22)
  shards = list(pipeline.eval_input(split, 8, process_index=1, process_count=2, max_batches=2))
  assert [s["targets"].tolist() for s in shards] == [[4, 5, 6, 7], [12, 13, 14, 15]]


def test_device_prefetch_keeps_order_and_looks_ahead():
  log = []

  def put(batch):
    log.append(("put", batch["step"]))
    return {"step": batch["step"], "device": True}

  source = ({"step": i} for i in range(6))
  out = []
  for batch in pipeline.device_prefetch(source, put, size=3):
    log.append(("yield", batch["step"]))
    out.append(batch)
  assert out == [{"step": i, "device": True} for i in range(6)]
  for i in range(6):  # batch i is yielded after batches i .. i+2 were put
    yielded = log.index(("yield", i))
    assert all(log.index(("put", j)) < yielded for j in range(i, min(i + 3, 6)))
    if i + 3 < 6:
      assert log.index(("put", i + 3)) > yielded  # and no further ahead than `size`
  assert list(pipeline.device_prefetch(iter([]), put)) == []
  with pytest.raises(ValueError, match="size must be >= 1, got 0"):
    next(pipeline.device_prefetch(iter([{"step": 0}]), put, size=0))


def test_device_prefetch_over_the_pipeline_with_device_put(split):
  import jax  # pylint: disable=import-outside-toplevel
  got = list(pipeline.device_prefetch(
      pipeline.train_input(split, 6, seed=4, num_steps=4), jax.device_put, size=2))
  assert all(isinstance(b["inputs"], jax.Array) for b in got)
  assert_batches_equal([jax.device_get(b) for b in got],
                       take(batches.train_batches(split, 6, 4), 4), PAIR_KEYS)


def test_batch_size_not_divisible_by_the_process_count(split):
  with pytest.raises(ValueError, match=r"global batch size 6 is not divisible by the 4 "
                                       r"processes \(hosts\): 6 % 4 = 2"):
    pipeline.train_input(split, 6, seed=0, process_count=4)
  with pytest.raises(ValueError, match=r"global batch size 6 is not divisible by the 4"):
    next(pipeline.eval_input(split, 6, process_count=4))
  with pytest.raises(ValueError, match=r"process_index=2 is not in \[0, process_count=2\)"):
    pipeline.train_input(split, 6, seed=0, process_index=2, process_count=2)


def test_split_smaller_than_a_batch(split):
  with pytest.raises(ValueError, match=r"split 'train' has 20 examples, fewer than batch "
                                       r"size 32"):
    pipeline.train_input(split, 32, seed=0)


def test_memory_mapped_splits_travel_to_workers_as_files(split, tmp_path):
  from lra.pathfinder import RowView  # pylint: disable=import-outside-toplevel
  for name in ("inputs", "inputs2"):
    np.save(tmp_path / f"{name}.npy", getattr(split, name))
  mapped = batches.Split(
      "train", np.load(tmp_path / "inputs.npy", mmap_mode="r"), split.lengths, split.targets,
      inputs2=RowView(np.load(tmp_path / "inputs2.npy", mmap_mode="r"), np.arange(20)),
      lengths2=split.lengths2)
  make = pipeline._TrainBatch  # pylint: disable=protected-access
  sent = pickle.dumps(make(mapped, 6, 2, slice(0, 6)))
  for name in ("inputs", "inputs2"):  # the file's name travels, not its content
    assert str(tmp_path / f"{name}.npy").encode() in sent
    assert getattr(split, name).tobytes() not in sent
  assert split.inputs.tobytes() in pickle.dumps(make(split, 6, 2, slice(0, 6)))  # in memory
  received = pickle.loads(sent)
  assert isinstance(received.split.inputs, np.memmap)
  assert isinstance(received.split.inputs2.array, np.memmap)
  assert_batches_equal([received(s) for s in range(5)],
                       take(batches.train_batches(split, 6, 2), 5), PAIR_KEYS)
