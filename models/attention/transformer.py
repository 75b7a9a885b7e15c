"""Exact softmax attention (Vaswani et al. 2017, eq. 1): softmax(Q K^T / sqrt(d)) V.

Quadratic in time and memory; the reference every X-former is compared with.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.registry import register


def softmax_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False,
                      dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """Pure function. q: `[b, lq, h, d]`, k/v: `[b, lk, h, d]`, masks bool `[b, l]`."""
  depth = q.shape[-1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(depth).astype(q.dtype)
  bias = masks.padding_bias(q_mask, kv_mask, logits.dtype)
  if bias is not None:
    logits = logits + bias
  if causal:
    logits = logits + masks.causal_bias(q.shape[1], k.shape[1], logits.dtype)
  weights = jax.nn.softmax(logits, axis=-1)
  if not deterministic and dropout_rate > 0.0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  return masks.zero_padded_queries(out, q_mask)


@register("transformer", causal=True, cross=True, subquadratic=False)
class SoftmaxAttention(nn.Module):
  """Full attention with padding and causal masks and attention-weight dropout."""
  causal: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return softmax_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, causal=self.causal,
                             dropout_rate=self.dropout_rate, dropout_rng=rng,
                             deterministic=deterministic)
