"""Block-local attention: exact in the one-block limit, and equal to a dense block-pattern
reference (built here only) for small blocks, ragged lengths, look-back and causal forms."""
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.local import local_attention
from models.attention.transformer import softmax_attention
from tests.dense_pattern_reference import (pattern_attention, ragged_mask, random_qkv,
                                          run_jitted)


@pytest.mark.parametrize("causal", [False, True])
def test_one_block_is_exact_attention(causal):
  q, k, v = random_qkv(0, length=13)
  mask = ragged_mask(13, [9, 13])
  got = run_jitted(local_attention, q, k, v, mask, block_size=16, causal=causal)
  want = run_jitted(softmax_attention, q, k, v, mask, causal=causal)
  np.testing.assert_allclose(got, want, atol=1e-5)


def local_pattern(length, block, look_back, causal):
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  allowed = (j // block == i // block) | (look_back & (j // block == i // block - 1))
  return allowed & (j <= i) if causal else allowed


@pytest.mark.parametrize("look_back", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_dense_block_pattern(look_back, causal):
  length, block = 15, 4  # not a multiple: the last block is padded internally
  q, k, v = random_qkv(1, length=length)
  mask = ragged_mask(length, [10, length])
  got = run_jitted(local_attention, q, k, v, mask, block_size=block, look_back=look_back,
                   causal=causal)
  want = pattern_attention(q, k, v, local_pattern(length, block, look_back, causal),
                           q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_blocks_are_independent_without_look_back():
  q, k, v = random_qkv(2, batch=1, length=16)
  grad_v = jax.jit(jax.grad(lambda v: local_attention(q, k, v, block_size=4)[0, 5].sum()))(v)
  touched = np.abs(np.asarray(grad_v[0])).sum(axis=(1, 2)) > 0
  np.testing.assert_array_equal(touched, (np.arange(16) // 4) == 1)


def test_mixer_dropout_changes_output_only_when_training():
  q, k, v = random_qkv(3)
  mixer = registry.build_mixer("local", {"block_size": 4}, dropout_rate=0.5)
  variables = {}  # no parameters
  apply = jax.jit(mixer.apply, static_argnames="deterministic")
  run = lambda det, seed: apply(variables, q, k, v, deterministic=det,
                                rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(run(True, 1), run(True, 2))
  assert np.abs(np.asarray(run(False, 1) - run(True, 1))).max() > 1e-3


def test_bad_settings_are_errors():
  q, k, v = random_qkv(4)
  with pytest.raises(ValueError, match="block_size"):
    local_attention(q, k, v, block_size=0)
  k2, v2 = random_qkv(5, length=32)[:2]
  with pytest.raises(ValueError, match="self-attention only"):
    local_attention(q, k2, v2)


# Incremental decoding (models/attention/decoding.py): a window cache, token by token == the
# causal forward.

@pytest.mark.parametrize("look_back", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_decoding_step_by_step_matches_the_causal_forward(look_back, bias):
  from models.attention import positions
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(20, length=11, heads=4, kv_heads=2)
  mixer = registry.build_mixer("local", {"block_size": 4, "look_back": look_back}, causal=True)
  score_bias = positions.alibi_bias(4) if bias else None
  full, stepped, _ = mixer_steps(mixer, q, k, v, score_bias=score_bias)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("look_back", [False, True])
def test_decoding_cache_holds_only_the_window(look_back):
  """The cache is the block (two with look-back), whatever the length decoded."""
  from tests.decode_steps import cache_shapes, mixer_steps, random_qkv_heads
  mixer = registry.build_mixer("local", {"block_size": 4, "look_back": look_back}, causal=True)
  shapes = []
  for length in (9, 16):
    q, k, v = random_qkv_heads(21, length=length, heads=2, kv_heads=1)
    _, _, cache = mixer_steps(mixer, q, k, v)
    shapes.append(cache_shapes(cache))
  assert shapes[0] == shapes[1]
  assert shapes[0]["cached_key"] == (2, 8 if look_back else 4, 1, 8)
