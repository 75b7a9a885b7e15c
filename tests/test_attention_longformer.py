"""Longformer: exact attention when the window covers the sequence, and equal to a dense
window + global pattern (sec. 3.1, built here only) for small windows, dilation and causal."""
import numpy as np
import pytest

from models.attention import registry
from models.attention.longformer import longformer_attention
from models.attention.transformer import softmax_attention
from tests.dense_pattern_reference import (pattern_attention, ragged_mask, random_qkv,
                                          run_jitted)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("global_positions", [(), (0,)])
def test_full_window_is_exact_attention(causal, global_positions):
  q, k, v = random_qkv(0, length=13)
  mask = ragged_mask(13, [9, 13])
  got = run_jitted(longformer_attention, q, k, v, mask, window=13,
                   global_positions=global_positions, causal=causal)
  want = run_jitted(softmax_attention, q, k, v, mask, causal=causal)
  np.testing.assert_allclose(got, want, atol=1e-5)


def longformer_pattern(length, window, dilation, global_positions, causal):
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  allowed = (np.abs(i - j) <= window * dilation) & ((i - j) % dilation == 0)
  is_global = np.isin(np.arange(length), global_positions)
  allowed = allowed | is_global[:, None] | is_global[None, :]
  return allowed & (j <= i) if causal else allowed


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window,dilation", [(2, 1), (2, 2), (3, 1)])
def test_matches_dense_window_and_global_pattern(causal, window, dilation):
  length, global_positions = 21, (0, 9)
  q, k, v = random_qkv(1, length=length)
  mask = ragged_mask(length, [15, length])
  got = run_jitted(longformer_attention, q, k, v, mask, window=window, dilation=dilation,
                   global_positions=global_positions, causal=causal)
  allowed = longformer_pattern(length, window, dilation, global_positions, causal)
  want = pattern_attention(q, k, v, allowed, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_padded_global_token_is_ignored():
  # A global position beyond a row's real length is a padded key: it must not be attended.
  q, k, v = random_qkv(2, length=16)
  mask = ragged_mask(16, [10, 16])
  got = run_jitted(longformer_attention, q, k, v, mask, window=2, global_positions=(0, 12))
  want = pattern_attention(q, k, v, longformer_pattern(16, 2, 1, (0, 12), False),
                           q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got[0, 10:]), 0.0)


def test_bad_settings_are_errors():
  q, k, v = random_qkv(3)
  with pytest.raises(ValueError, match="global_positions"):
    longformer_attention(q, k, v, window=2, global_positions=(16,))
  with pytest.raises(ValueError, match="window=0"):
    longformer_attention(q, k, v, window=0)


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("dilation,global_positions", [(1, (0,)), (2, (0, 7)), (1, ())])
def test_decoding_step_by_step_matches_the_causal_forward(dilation, global_positions):
  """A global query past the window (position 7 > window * dilation = 4) reads every earlier
  key: the step applies the pattern's row over the full cache."""
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(30, length=12, heads=4, kv_heads=2)
  mixer = registry.build_mixer("longformer", {"window": 2, "dilation": dilation,
                                              "global_positions": global_positions},
                               causal=True)
  full, stepped, cache = mixer_steps(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["cached_key"].shape == (2, 12, 2, 8)
