"""Exact softmax attention (Vaswani et al. 2017, eq. 1): softmax(Q K^T / sqrt(d)) V.

The reference every X-former is compared with. `implementation` chooses how it is computed:
"dense" materialises the `[L, L]` weights (quadratic memory); "blocked" is the same maths in
linear memory (online softmax, `blocked_softmax.py`); "xla" calls
`jax.nn.dot_product_attention`, which uses a fused kernel (cuDNN flash attention) on GPUs where
JAX offers one (no attention dropout there).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.blocked_softmax import blocked_softmax_attention
from models.attention.registry import register

IMPLEMENTATIONS = ("dense", "blocked", "xla")


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
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  return masks.zero_padded_queries(out, q_mask)


@register("transformer", causal=True, cross=True, subquadratic=False)
class SoftmaxAttention(nn.Module):
  """Full attention with padding and causal masks and attention-weight dropout."""
  causal: bool = False
  dropout_rate: float = 0.0
  implementation: str = "dense"  # "dense", "blocked" (linear memory) or "xla"
  # Block lengths of the blocked implementation (memory O(block_q * block_k) per step). One
  # key block up to 16K: on XLA's CPU, whole-row blocks beat an online softmax over shorter key
  # blocks (attention-layer train step at L=8192: 5.74 s against 6.67 s with block_k=4096;
  # docs/benchmark_block_k_8192.json).
  block_q: int = 256
  block_k: int = 16384

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    common = dict(q_mask=q_mask, kv_mask=kv_mask, causal=self.causal,
                  dropout_rate=self.dropout_rate, dropout_rng=rng, deterministic=deterministic)
    if self.implementation == "dense":
      return softmax_attention(q, k, v, **common)
    if self.implementation == "blocked":
      return blocked_softmax_attention(q, k, v, block_q=self.block_q, block_k=self.block_k,
                                       **common)
    if self.implementation == "xla":
      if rng is not None:
        raise ValueError("attention_kwargs.implementation='xla' has no attention dropout; set "
                         "config.model.attention_dropout_rate=0 or use 'dense'/'blocked'")
      return xla_attention(q, k, v, q_mask, kv_mask, self.causal)
    raise ValueError(f"transformer attention_kwargs.implementation={self.implementation!r}; "
                     f"expected one of {IMPLEMENTATIONS}")


def xla_attention(q, k, v, q_mask, kv_mask, causal):
  """`jax.nn.dot_product_attention` (fused cuDNN kernel on GPUs that have one)."""
  mask = None
  if kv_mask is not None:
    mask = kv_mask[:, None, None, :]
    if q_mask is not None:
      mask = mask & q_mask[:, None, :, None]
  if causal and q.shape[1] != k.shape[1]:
    raise ValueError("implementation='xla' needs equal query and key lengths when causal")
  out = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)
  return masks.zero_padded_queries(out, q_mask)
