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
on how much padding the batch gave it. In the causal form M is therefore the example's length
too (a function of the mask, never of a later token's content; incremental decoding must fix
M in advance, e.g. to the maximum length, as the paper's M >= L allows).

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

from models.attention import feature_maps
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


@functools.partial(jax.jit, static_argnames=("causal", "eps", "chunk_size"))
def cosformer_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False, eps=1e-6,
                        chunk_size=128):
  """Pure function. q `[b, lq, h, d]`, k/v `[b, lk, h, d]`, masks bool `[b, l]`."""
  q, k = q.astype(jnp.float32), k.astype(jnp.float32)
  q_positions, m = positions_and_length(q_mask, q.shape[1], kv_mask, k.shape[1])
  k_positions, _ = positions_and_length(kv_mask, k.shape[1])
  phi_q = cos_features(q, q_positions, m)
  phi_k = cos_features(k, k_positions, m)
  return feature_maps.padded_linear_attention(phi_q, phi_k, v, q_mask=q_mask, kv_mask=kv_mask,
                                              causal=causal, eps=eps, chunk_size=chunk_size)


@register("cosformer", causal=True, cross=True)
class CosformerAttention(nn.Module):
  """ReLU features with cos re-weighting; `chunk_size` changes only the causal form's speed."""
  causal: bool = False
  eps: float = 1e-6        # the authors' denominator eps
  chunk_size: int = 128

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    if self.chunk_size < 1:
      raise ValueError(f"cosformer chunk_size={self.chunk_size} "
                       "(config.model.attention_kwargs); expected >= 1")
    return cosformer_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, causal=self.causal,
                               eps=self.eps, chunk_size=self.chunk_size)
