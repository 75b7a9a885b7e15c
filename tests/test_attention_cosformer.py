"""cosFormer: both linear forms equal the dense O(L^2) formula of eq. 9 (M = each example's real
length, or the fixed max_len in the causal form), padding is invisible, the cos re-weighting
decays with distance, and incremental decoding equals the causal forward."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.cosformer import cosformer_attention
from tests import state_decoding

HEADS, DIM = 2, 8


def qkv(seed, length=16, batch=2, kv_length=None):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, length, HEADS, DIM)).astype(np.float32)
  shape = (batch, kv_length or length, HEADS, DIM)
  return q, rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(
      np.float32)


def dense_eq9(q, k, v, q_valid, k_valid, causal, eps=1e-6, fixed_m=None):
  """s_ij = ReLU(q_i).ReLU(k_j) cos(pi/2 (i - j) / M) over the real tokens of each example;
  M = the longer real length, or `fixed_m`."""
  out = np.zeros_like(q)
  for b in range(q.shape[0]):
    lq, lk = q_valid[b], k_valid[b]
    m = fixed_m or max(lq, lk)
    i, j = np.arange(1, lq + 1)[:, None], np.arange(1, lk + 1)[None, :]
    s = np.einsum("ihd,jhd->hij", np.maximum(q[b, :lq], 0), np.maximum(k[b, :lk], 0))
    s = s * np.cos(0.5 * np.pi * (i - j) / m)
    if causal:
      s = s * (j <= i)
    out[b, :lq] = np.einsum("hij,jhd->ihd", s, v[b, :lk]) / (s.sum(-1).T[..., None] + eps)
  return out


@pytest.mark.parametrize("causal", [False, True])
def test_linear_forms_equal_dense_eq_9_with_m_the_real_length(causal):
  q, k, v = qkv(0)
  valid = [16, 11]
  mask = np.arange(16)[None, :] < np.array(valid)[:, None]
  out = cosformer_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal, chunk_size=5)
  np.testing.assert_allclose(out, dense_eq9(q, k, v, valid, valid, causal), atol=1e-5, rtol=1e-4)
  assert np.all(np.asarray(out[1, 11:]) == 0.0)


def test_cross_lengths_use_m_the_longer_real_length():
  q, k, v = qkv(1, length=8, kv_length=12)
  q_mask = np.arange(8)[None, :] < np.array([[8], [5]])
  kv_mask = np.arange(12)[None, :] < np.array([[12], [3]])
  out = cosformer_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask)
  np.testing.assert_allclose(out, dense_eq9(q, k, v, [8, 5], [12, 3], False), atol=1e-5,
                             rtol=1e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_padded_input_equals_the_input_cut_to_its_real_tokens(causal):
  q, k, v = qkv(2, batch=1)
  mask = np.arange(16)[None, :] < 10
  noisy = [np.where(mask[..., None, None], t, 1e3) for t in (q, k, v)]
  out = cosformer_attention(*noisy, q_mask=mask, kv_mask=mask, causal=causal, chunk_size=4)
  cut = cosformer_attention(q[:, :10], k[:, :10], v[:, :10], causal=causal, chunk_size=4)
  np.testing.assert_allclose(out[:, :10], cut, atol=1e-5, rtol=1e-5)
  assert np.all(np.asarray(out[:, 10:]) == 0.0)


def test_reweighting_decays_with_distance():
  # Equal positive q and k: every ReLU product is the same, so the attention of query i over the
  # keys is the cos profile itself; one-hot values read it out.
  length = DIM
  q = k = np.ones((1, length, HEADS, DIM), np.float32)
  v = np.broadcast_to(np.eye(length, dtype=np.float32)[None, :, None, :], (1, length, HEADS, DIM))
  weights = np.asarray(cosformer_attention(q, k, v))[0, :, 0]          # [query, key]
  for i in range(length):
    distance = np.abs(np.arange(length) - i)
    profile = np.cos(0.5 * np.pi * distance / length)
    np.testing.assert_allclose(weights[i], profile / profile.sum(), atol=1e-6)
    # Strictly smaller the farther the key, on both sides of the query.
    assert np.all(np.diff(weights[i, i:]) < 0) and np.all(np.diff(weights[i, :i + 1]) > 0)


def test_causal_form_with_max_len_is_eq_9_with_m_fixed_and_ignores_what_follows():
  q, k, v = qkv(3)
  valid = [16, 11]
  mask = np.arange(16)[None, :] < np.array(valid)[:, None]
  out = cosformer_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=True, chunk_size=5,
                            max_len=20)
  np.testing.assert_allclose(out, dense_eq9(q, k, v, valid, valid, True, fixed_m=20),
                             atol=1e-5, rtol=1e-4)
  # M no longer depends on the length: a prefix's outputs are the first outputs of the whole
  prefix = cosformer_attention(q[:, :7], k[:, :7], v[:, :7], causal=True, max_len=20)
  np.testing.assert_allclose(prefix, out[:, :7], atol=1e-5, rtol=1e-5)
  # The bidirectional form keeps M = the real length whatever max_len says.
  np.testing.assert_allclose(
      cosformer_attention(q, k, v, q_mask=mask, kv_mask=mask, max_len=20),
      dense_eq9(q, k, v, valid, valid, False), atol=1e-5, rtol=1e-4)
  with pytest.raises(ValueError, match="max_len=8"):
    cosformer_attention(q, k, v, causal=True, max_len=8)


@pytest.mark.parametrize("max_len", [None, 20])
def test_decoding_step_by_step_equals_the_causal_forward_with_a_constant_state(max_len):
  mixer = registry.build_mixer("cosformer", {"chunk_size": 5}, causal=True, max_len=max_len)
  q, k, v = state_decoding.qkv(0, 13, heads=4, kv_heads=2)
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  shapes = state_decoding.cache_shapes(cache)
  # the cos- and sin-weighted sums side by side: 2d features
  assert shapes == {"index": ((), "int32"), "state": ((2, 2, 16, 8), "float32"),
                    "normaliser": ((2, 2, 16), "float32"), "m": ((), "float32")}
  assert float(cache["m"]) == (max_len or 13)
  longer = mixer.init(jax.random.key(0), *state_decoding.qkv(1, 17, heads=4, kv_heads=2),
                      decode=True)["cache"]
  assert state_decoding.cache_shapes(longer) == shapes


def test_decoding_through_the_base_with_rope_and_grouped_heads():
  full, stepped, _ = state_decoding.attention_decode("cosformer", {}, 11)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)


def test_decoding_in_bfloat16_keeps_the_dtype_and_a_float32_state():
  mixer = registry.build_mixer("cosformer", {}, causal=True, max_len=12)
  q, k, v = (x.astype(jnp.bfloat16) for x in state_decoding.qkv(2, 9))
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v)
  assert stepped.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(stepped)))
  assert cache["state"].dtype == jnp.float32
  np.testing.assert_allclose(np.float32(stepped), np.float32(full), atol=5e-2, rtol=5e-2)
