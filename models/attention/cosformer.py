"""cosFormer (Qin et al. 2022, "cosFormer: Rethinking Softmax in Attention", ICLR).

Softmax is replaced by a ReLU kernel with a cos-based re-weighting (sec. 3.2-3.3, eq. 9):

  s(q_i, k_j) = ReLU(q_i) . ReLU(k_j) cos(pi/2 (i - j) / M),

which decays with the distance |i - j| (a locality bias) and stays non-negative for
|i - j| < M. By cos(a - b) = cos a cos b + sin a sin b (eq. 10-11) it is linear attention over
the 2d-dimensional features

  phi_q(i) = [ReLU(q_i) sin(pi i / 2M), ReLU(q_i) cos(pi i / 2M)], phi_k(j) likewise,

out_i = sum_j s(q_i, k_j) v_j / sum_j s(q_i, k_j): bidirectional as phi_q (phi_k^T V), causal
by chunked prefix sums (`feature_maps`, float32 inside), never an [L, L] array. Positions are
1-based (i = 1..L) as in the authors' code.

M: the paper and the authors' code take the sequence length (max of query and key lengths).
Here M is each example's real length, max(#real queries, #real keys) from the masks, and i
counts real tokens (a cumulative sum of the mask): the output of an example does not depend
on how much padding the batch gave it.

Causal form: M must not depend on how many tokens follow, or incremental decoding could not
compute a token's features before the sequence ends. With `max_len` given (the model's, which
the base passes) M = max_len, fixed: the paper only needs M >= L (sec. 3.3, so that
cos(pi/2 (i - j) / M) stays non-negative), and the authors' code takes M = the longest length
it is given (`m = max(src_len, tgt_len)` in their cosformer attention). Without `max_len` the
causal form keeps M = the example's real length (a function of the mask only) and decoding uses
M = the length of the cache-creating call, the most tokens it will decode: the same M as the
full forward over those tokens. The bidirectional form keeps M = the real length either way.

Incremental decoding (decode="state"): the causal prefix sums of the 2d features, i.e. the
cos- and sin-weighted sums of ReLU(k) v^T and ReLU(k) (`feature_maps.LinearState`): float32
`[b, kv_heads, 2d, d]` + `[b, kv_heads, 2d]` and M, whatever the length.

Denominator: the features are non-negative (sin, cos >= 0 on (0, pi/2]), so the sum is >= 0;
`eps` (1e-6, the authors') is added to it (`feature_maps`; the authors clamp at eps instead,
a difference below eps). No attention weights are formed, so no attention dropout.
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, feature_maps
from models.attention.registry import register


def positions_and_length(mask, length, other_mask=None, other_length=None):
  """1-based rank of each real token `[b, l]` and M `[b]` = max(#real here, #real in other)."""
  mask = jnp.ones((1, length), bool) if mask is None else mask
  count = jnp.sum(mask, axis=-1)
  if other_length is not None:
    other = (jnp.full((1,), other_length) if other_mask is None
             else jnp.sum(other_mask, axis=-1))
    count = jnp.maximum(count, other)
  return jnp.cumsum(mask, axis=-1).astype(jnp.float32), jnp.maximum(count, 1).astype(jnp.float32)


def cos_features(x, positions, m):
  """[ReLU(x) sin(pi i / 2M), ReLU(x) cos(pi i / 2M)] `[b, l, h, 2d]` (eq. 11)."""
  angle = (0.5 * math.pi) * positions / m[:, None]            # [b, l]
  relu = jax.nn.relu(x)
  return jnp.concatenate([relu * jnp.sin(angle)[:, :, None, None],
                          relu * jnp.cos(angle)[:, :, None, None]], axis=-1)


@functools.partial(jax.jit, static_argnames=("causal", "eps", "chunk_size", "max_len"))
def cosformer_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False, eps=1e-6,
                        chunk_size=128, max_len=None):
  """Pure function. q `[b, lq, h, d]`, k/v `[b, lk, h, d]`, masks bool `[b, l]`; `max_len`
  (causal only): M = max_len instead of the real length (see the module docstring)."""
  q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  q_positions, m = positions_and_length(q_mask, q.shape[1], kv_mask, k.shape[1])
  if causal and max_len is not None:
    if max(q.shape[1], k.shape[1]) > max_len:
      raise ValueError(f"cosformer: length {max(q.shape[1], k.shape[1])} > max_len={max_len} "
                       "(the causal form's M; cos re-weights must stay >= 0, M >= L)")
    m = jnp.full_like(m, float(max_len))
  k_positions, _ = positions_and_length(kv_mask, k.shape[1])
  phi_q = cos_features(q, q_positions, m)
  phi_k = cos_features(k, k_positions, m)
  return feature_maps.padded_linear_attention(phi_q, phi_k, v, q_mask=q_mask, kv_mask=kv_mask,
                                              causal=causal, eps=eps, chunk_size=chunk_size)


@register("cosformer", causal=True, cross=True, decode="state")
class CosformerAttention(nn.Module):
  """ReLU features with cos re-weighting; `chunk_size` changes only the causal form's speed.
  `max_len` (the model's; the base passes it): the causal form's fixed M."""
  causal: bool = False
  eps: float = 1e-6        # the authors' denominator eps
  chunk_size: int = 128
  max_len: int | None = None

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if self.chunk_size < 1:
      raise ValueError(f"cosformer chunk_size={self.chunk_size} "
                       "(config.model.attention_kwargs); expected >= 1")
    if decode:
      return self._decode(q, k, v)
    return cosformer_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, causal=self.causal,
                               eps=self.eps, chunk_size=self.chunk_size, max_len=self.max_len)

  def _decode(self, q, k, v):
    """Incremental decoding (decoding.py); k/v have the base's key/value heads."""
    if not self.causal:
      raise ValueError("cosformer decode=True needs the causal form")
    stepping, index = decoding.decode_index(self)
    b, length, kv_heads, dim = k.shape
    state = feature_maps.LinearState(self, b, kv_heads, 2 * dim, v.shape[-1])
    # M: max_len, else the cache-creating call's length (the full forward's M over it).
    m = self.variable("cache", "m", lambda: jnp.full((), self.max_len or length, jnp.float32))
    if not stepping:   # the cache-creating call: the causal full forward
      heads = q.shape[2]
      return cosformer_attention(q, decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads),
                                 causal=True, eps=self.eps, chunk_size=self.chunk_size,
                                 max_len=self.max_len)
    decoding.check_one_token(q, "attention 'cosformer'")
    position = jnp.broadcast_to(index + 1, (b, 1)).astype(jnp.float32)   # 1-based, eq. 11
    m_b = jnp.broadcast_to(m.value, (b,))
    phi_q = cos_features(q.astype(jnp.float32), position, m_b)
    phi_k = cos_features(k.astype(jnp.float32), position, m_b)
    return state.step(phi_q, phi_k, v, eps=self.eps)
