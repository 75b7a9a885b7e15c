"""H-Transformer-1D: one level is exact softmax attention, 2-4 levels equal a dense reference of
the hierarchical matrix (every (i, j) at the first level where their blocks are <= 1 apart),
appended padding changes nothing, the causal form is the prefix's own output, and the settings
are checked.

Inputs are numpy; the pure function is jitted whole (op-by-op compiling dominates on CPU).
"""
import functools

import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.h_transformer_1d import h_attention, hierarchy_shape
from models.attention.transformer import softmax_attention

HEADS, DIM = 2, 8
exact_attention = jax.jit(softmax_attention, static_argnames=("causal",))
hierarchical = jax.jit(h_attention, static_argnames=("block_size", "causal"))


def qkv(seed, length=16, batch=2):
  rng = np.random.default_rng(seed)
  shape = (batch, length, HEADS, DIM)
  return [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]


def padding_mask(valid, length=16):
  return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def dense_reference(q, k, v, mask, block_size, causal):
  """The hierarchical attention matrix built entry by entry (float64): entry (i, j) is
  exp(q_l(i) . k_l(j) / sqrt(d)) at the first level l whose blocks of i and j are at most one
  apart, where q_l, k_l are level l's coarse tokens (mean of non-empty children; causal: the
  first fine query); output = A V / A 1 over real keys."""
  batch, length, heads, depth = q.shape
  nr, levels = hierarchy_shape(length, block_size)
  size = nr * 2 ** levels
  real = np.zeros((batch, size))
  real[:, :length] = mask
  grow = lambda t: np.concatenate([t, np.zeros((batch, size - length, heads, depth))], 1)
  q, k, v = (grow(t.astype(np.float64)) * real[:, :, None, None] for t in (q, k, v))
  coarse_q, coarse_k, count = [q / np.sqrt(depth)], [k], [real]
  for _ in range(1, levels):
    pairs = lambda t: t.reshape(batch, -1, 2, *t.shape[2:])
    nonempty = np.maximum((pairs(count[-1]) > 0).sum(2), 1)[..., None, None]
    coarse_q.append(pairs(coarse_q[-1])[:, :, 0] if causal
                    else pairs(coarse_q[-1]).sum(2) / nonempty)
    coarse_k.append(pairs(coarse_k[-1]).sum(2) / nonempty)
    count.append(pairs(count[-1]).sum(2))
  out = np.zeros_like(q)
  for i in range(size):
    num, den = np.zeros((batch, heads, depth)), np.zeros((batch, heads))
    for j in range(i + 1 if causal else size):
      level = next(l for l in range(levels) if abs((i >> l) // nr - (j >> l) // nr) <= 1)
      score = np.einsum("bhd,bhd->bh", coarse_q[level][:, i >> level],
                        coarse_k[level][:, j >> level])
      weight = np.exp(score) * real[:, j, None]
      num, den = num + weight[..., None] * v[:, j], den + weight
    out[:, i] = num / np.where(den > 0, den, 1.0)[..., None]
  return (out * real[:, :, None, None])[:, :length]


@pytest.mark.parametrize("block_size,causal", [(8, False), (8, True), (64, False)])
def test_one_level_is_exact_softmax_attention(block_size, causal):
  # 2 * Nr >= L: one level of two blocks (Nr = L / 2), diagonal + super + sub = everything
  q, k, v = qkv(0)
  mask = padding_mask([11, 16])
  assert hierarchy_shape(16, block_size) == (8, 1)
  out = hierarchical(q, k, v, block_size=block_size, causal=causal, q_mask=mask, kv_mask=mask)
  expected = exact_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("length,block_size,causal", [
    (16, 4, False),   # 2 levels
    (16, 2, False),   # 3 levels
    (13, 2, True),    # 3 levels, 3 positions of internal padding
    (32, 2, False),   # 4 levels
])
def test_levels_equal_the_dense_hierarchical_matrix(length, block_size, causal):
  q, k, v = qkv(1, length)
  mask = padding_mask([length - 3, length], length)
  out = hierarchical(q, k, v, block_size=block_size, causal=causal, q_mask=mask, kv_mask=mask)
  expected = dense_reference(q, k, v, mask, block_size, causal)
  np.testing.assert_allclose(out, expected, atol=2e-5, rtol=0)
  # and it is an approximation: the far field differs from exact attention
  assert np.abs(out - exact_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)).max() > 1e-3


def test_appended_padding_changes_nothing():
  # 11 real tokens: on their own 3 levels of Nr = 2 (padded to 16 inside); in 32 positions,
  # 4 levels (the extra top level only pairs padding with real tokens). The causal form: the
  # prefix test below.
  q, k, v = qkv(2, 32, batch=1)
  mask = padding_mask([11], 32)
  noisy = [np.where(mask[..., None, None], t, 1e3) for t in (q, k, v)]
  out = hierarchical(*noisy, block_size=2, q_mask=mask, kv_mask=mask)
  cut = hierarchical(q[:, :11], k[:, :11], v[:, :11], block_size=2)
  np.testing.assert_allclose(out[:, :11], cut, atol=1e-5, rtol=1e-5)
  assert np.all(np.asarray(out[:, 11:]) == 0.0)


def test_causal_output_is_the_prefix_own_output():
  # Exactly causal: the outputs at positions < n are those of the sequence cut to n tokens.
  q, k, v = qkv(3, 16, batch=1)
  full = np.asarray(hierarchical(q, k, v, block_size=2, causal=True))
  for n in (5, 9):
    cut = hierarchical(q[:, :n], k[:, :n], v[:, :n], block_size=2, causal=True)
    np.testing.assert_allclose(full[:, :n], cut, atol=1e-5, rtol=1e-5)


def test_levels_grow_with_the_log_of_the_length():
  assert hierarchy_shape(4096, 16) == (16, 8)
  assert hierarchy_shape(4097, 16) == (16, 9)
  assert hierarchy_shape(1000, 16) == (16, 6)   # padded to 1024
  assert hierarchy_shape(30, 16) == (15, 1)


def test_block_size_must_be_even_and_module_has_no_parameters():
  q, k, v = qkv(4)
  with pytest.raises(ValueError, match="block_size=3"):
    h_attention(q, k, v, block_size=3)
  mixer = registry.build_mixer("h_transformer_1d", {"block_size": 4})
  variables = jax.eval_shape(mixer.init, jax.random.key(0), q, k, v)
  assert not jax.tree_util.tree_leaves(variables)
  mask = padding_mask([13, 16])
  out = jax.jit(mixer.apply)({}, q, k, v, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(out, hierarchical(q, k, v, block_size=4, q_mask=mask, kv_mask=mask),
                             atol=1e-6)


def test_bfloat16_keeps_its_dtype_and_stays_close():
  q, k, v = qkv(5)
  run = functools.partial(hierarchical, block_size=4)
  low = run(*(t.astype(jax.numpy.bfloat16) for t in (q, k, v)))
  assert low.dtype == jax.numpy.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), run(q, k, v), atol=5e-2)


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("length,block_size", [(13, 2), (16, 4), (7, 4)])
def test_decoding_step_by_step_matches_the_causal_forward(length, block_size):
  """Several levels (13 with Nr 2: 3 levels; 16 with Nr 4: 2 levels) and the one-level exact
  limit (7 with Nr 4); one kv head for two query heads."""
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(90, length=length, heads=2, kv_heads=1)
  mixer = registry.build_mixer("h_transformer_1d", {"block_size": block_size}, causal=True)
  full, stepped, cache = mixer_steps(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["cached_key"].shape == (2, length, 1, 8)
