"""cosFormer: both linear forms equal the dense O(L^2) formula of eq. 9 (M = each example's real
length), padding is invisible, and the cos re-weighting decays with distance."""
import numpy as np
import pytest

from models.attention.cosformer import cosformer_attention

HEADS, DIM = 2, 8


def qkv(seed, length=16, batch=2, kv_length=None):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, length, HEADS, DIM)).astype(np.float32)
  shape = (batch, kv_length or length, HEADS, DIM)
  return q, rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(
      np.float32)


def dense_eq9(q, k, v, q_valid, k_valid, causal, eps=1e-6):
  """s_ij = ReLU(q_i).ReLU(k_j) cos(pi/2 (i - j) / M) over the real tokens of each example."""
  out = np.zeros_like(q)
  for b in range(q.shape[0]):
    lq, lk = q_valid[b], k_valid[b]
    m = max(lq, lk)
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
