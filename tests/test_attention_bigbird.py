"""BigBird ITC: exact when every block is global or one block holds the sequence, and equal to
a dense reference built here from the same block plan (window + global + random blocks)."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.bigbird import bigbird_attention, bigbird_plan
from models.attention.transformer import softmax_attention
from tests.dense_pattern_reference import (pattern_attention, ragged_mask, random_qkv,
                                          run_jitted)


@pytest.mark.parametrize("kwargs", [{"block_size": 4, "num_global_blocks": 4},
                                    {"block_size": 64}])
def test_all_global_or_one_block_is_exact_attention(kwargs):
  q, k, v = random_qkv(0, length=13)
  mask = ragged_mask(13, [9, 13])
  got = run_jitted(bigbird_attention, q, k, v, mask, **kwargs)
  want = run_jitted(softmax_attention, q, k, v, mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def dense_pattern_from_plan(length, block, heads, plan):
  global_ids, middle, window, window_ok, random, random_ok = plan
  n = -(-length // block)
  allowed = np.zeros((heads, n, n), bool)  # query block -> key block
  allowed[:, global_ids, :] = True
  allowed[:, :, global_ids] = True
  for row, m in enumerate(middle):
    allowed[:, m, window[row][window_ok[row]]] = True
    for head in range(heads):
      allowed[head, m, random[head, row][random_ok[head, row]]] = True
  blocks = np.arange(length) // block
  return allowed[:, blocks][:, :, blocks]


@pytest.mark.parametrize("num_global_blocks", [1, 2, 3])
def test_matches_dense_reference_of_its_plan(num_global_blocks):
  length, block, heads, r = 38, 4, 2, 2  # 10 blocks, the last one padded internally
  q, k, v = random_qkv(1, length=length, heads=heads)
  mask = ragged_mask(length, [29, length])
  got = run_jitted(bigbird_attention, q, k, v, mask, block_size=block, num_random_blocks=r,
                   num_global_blocks=num_global_blocks, seed=5)
  plan = bigbird_plan(10, heads, num_global_blocks, r, 5)
  allowed = dense_pattern_from_plan(length, block, heads, plan)
  want = pattern_attention(q, k, v, allowed, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_plan_random_blocks_avoid_window_and_global():
  global_ids, middle, window, _, random, random_ok = bigbird_plan(12, 3, 2, 3, seed=0)
  np.testing.assert_array_equal(global_ids, [0, 11])
  np.testing.assert_array_equal(middle, np.arange(1, 11))
  assert random_ok.all()
  for head in range(3):
    for row, m in enumerate(middle):
      chosen = random[head, row]
      assert len(set(chosen)) == 3
      assert not set(chosen) & ({0, 11} | {m - 1, m, m + 1})
  # Fixed by the seed, and a different seed draws differently.
  np.testing.assert_array_equal(random, bigbird_plan(12, 3, 2, 3, seed=0)[4])
  assert (random != bigbird_plan(12, 3, 2, 3, seed=1)[4]).any()


def test_few_candidates_leave_random_slots_empty():
  *_, random_ok = bigbird_plan(5, 1, 2, 3, seed=0)  # middle 1..3: at most 1 candidate each
  assert random_ok.sum(axis=-1).max() <= 1


def test_layers_draw_different_plans():
  # The plan seed folds in the module path, so two layers of one model differ.
  class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, q, k, v):
      build = lambda name: registry.build_mixer(
          "bigbird", {"block_size": 4, "num_random_blocks": 1}, name=name)
      return build("layer_0")(q, k, v), build("layer_1")(q, k, v)

  q, k, v = random_qkv(2, length=48)
  apply = jax.jit(TwoLayers().apply)
  out_0, out_1 = apply({}, q, k, v)
  assert np.abs(np.asarray(out_0 - out_1)).max() > 1e-4
  np.testing.assert_array_equal(out_0, apply({}, q, k, v)[0])  # fixed per layer


def test_bad_settings_are_errors():
  q, k, v = random_qkv(3)
  with pytest.raises(ValueError, match="block_size=0"):
    bigbird_attention(q, k, v, block_size=0)
  with pytest.raises(ValueError, match="no causal form"):
    registry.build_mixer("bigbird", {}, causal=True)
