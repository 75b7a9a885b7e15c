"""BigBird ITC: exact when every block is global or one block holds the sequence, and equal to
a dense reference built here from the paper's definition of the window and global blocks
(the random blocks are read from the plan, after checking them against the paper's rules)."""
import zlib

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


def paper_block_pattern(n, num_global_blocks):
  """BigBird ITC from the paper's definition (Zaheer et al. 2020, sec. 2 and appendix D), not
  from `bigbird_plan`: `(allowed [n, n] query block -> key block, global set, middle list)`.

  Global blocks (ITC as in bigbird.py's docstring: the first ceil(g/2) and the last floor(g/2)
  blocks) attend to every block and every block attends to them; each other query block m
  attends to its sliding window of 3 blocks: m - 1, m and m + 1 (those that exist).
  """
  g = min(num_global_blocks, n)
  global_blocks = set(range(g - g // 2)) | set(range(n - g // 2, n))
  allowed = np.zeros((n, n), bool)
  for m in range(n):
    if m in global_blocks:
      allowed[m, :] = True
      continue
    allowed[m, sorted(global_blocks)] = True
    for neighbour in (m - 1, m, m + 1):
      if 0 <= neighbour < n:
        allowed[m, neighbour] = True
  middle = [m for m in range(n) if m not in global_blocks]
  return allowed, global_blocks, middle


def checked_random_blocks(n, heads, num_global_blocks, r, seed):
  """The random block choices, `{(head, query block): set}`, read from the implementation's
  plan (they are random) after checking them against the paper's constraints: each non-global
  query block gets r distinct random key blocks, none global and none in its window (bigbird.py
  docstring: "drawn ... among the blocks that are neither in its window nor global", as the
  authors' `bigbird_block_rand_mask`), or every such candidate when fewer than r exist."""
  _, global_blocks, middle = paper_block_pattern(n, num_global_blocks)
  _, plan_middle, _, _, random, random_ok = bigbird_plan(n, heads, num_global_blocks, r, seed)
  np.testing.assert_array_equal(plan_middle, middle)
  chosen = {}
  for head in range(heads):
    for row, m in enumerate(middle):
      picks = [int(b) for b in random[head, row][random_ok[head, row]]]
      candidates = {b for b in range(n) if b not in global_blocks and abs(b - m) > 1}
      assert len(set(picks)) == len(picks), (head, m, picks)      # no block twice
      assert set(picks) <= candidates, (head, m, picks)            # not window, not global
      assert len(picks) == min(r, len(candidates)), (head, m, picks)
      chosen[head, m] = set(picks)
  return chosen


def paper_dense_mask(length, block, heads, num_global_blocks, r, seed):
  """`[h, L, L]` token mask: window + global from the definition, random from the plan."""
  n = -(-length // block)
  allowed, _, middle = paper_block_pattern(n, num_global_blocks)
  allowed = np.broadcast_to(allowed, (heads, n, n)).copy()
  for (head, m), picks in checked_random_blocks(n, heads, num_global_blocks, r, seed).items():
    allowed[head, m, sorted(picks)] = True
  blocks = np.arange(length) // block
  return allowed[:, blocks][:, :, blocks]


def test_paper_pattern_by_hand():
  # 6 blocks, 2 global (first and last): block 2 sees 1, 2, 3 and the globals 0 and 5.
  allowed, global_blocks, middle = paper_block_pattern(6, 2)
  assert global_blocks == {0, 5} and middle == [1, 2, 3, 4]
  assert allowed[0].all() and allowed[5].all() and allowed[:, 0].all() and allowed[:, 5].all()
  np.testing.assert_array_equal(np.flatnonzero(allowed[2]), [0, 1, 2, 3, 5])
  np.testing.assert_array_equal(np.flatnonzero(allowed[1]), [0, 1, 2, 5])
  # 3 global blocks: the first two and the last one.
  assert paper_block_pattern(6, 3)[1] == {0, 1, 5}


@pytest.mark.parametrize("num_global_blocks,r", [(0, 0), (1, 2), (2, 2), (3, 2)])
def test_sparse_path_matches_the_papers_pattern(num_global_blocks, r):
  # 38 tokens in blocks of 4: 10 blocks, the last one padded internally, so the block-sparse
  # path (window gathers, global rows, per-head random gathers) runs, not the one-block limit.
  length, block, heads, seed = 38, 4, 2, 5
  q, k, v = random_qkv(1, length=length, heads=heads)
  mask = ragged_mask(length, [29, length])
  got = run_jitted(bigbird_attention, q, k, v, mask, block_size=block, num_random_blocks=r,
                   num_global_blocks=num_global_blocks, seed=seed)
  allowed = paper_dense_mask(length, block, heads, num_global_blocks, r, seed)
  want = pattern_attention(q, k, v, allowed, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_module_uses_the_papers_pattern_with_its_layer_seed():
  # The registered mixer (layer seed = seed + crc32 of its path) on the same definition.
  length, block, heads = 24, 4, 2
  q, k, v = random_qkv(4, length=length, heads=heads)
  mixer = registry.build_mixer("bigbird", {"block_size": block, "num_random_blocks": 1})
  out = jax.jit(lambda q, k, v: mixer.apply({}, q, k, v))(q, k, v)
  layer_seed = zlib.crc32(b"")   # an unbound top-level module has the empty path
  allowed = paper_dense_mask(length, block, heads, 2, 1, layer_seed)
  np.testing.assert_allclose(out, pattern_attention(q, k, v, allowed), atol=1e-5, rtol=1e-5)


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
