"""Linformer (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity").

Keys and values are projected along the length axis by learned k x n matrices E and F
(eq. 7): head_i = softmax(Q (E K)^T / sqrt(d)) (F V), so the attention matrix is [L, k] and
time and memory are O(L k). n is the maximum length (`max_len`, or `kv_max_len` for cross
attention); a shorter input uses the first columns of E and F. Padded keys and values are
zeroed before projecting, so padding cannot leak into the projected keys (the LRA code ignores
the mask here). Parameter sharing (sec. 4): "none" (E_i, F_i per head), "headwise" (one E, F
for all heads), "key_value" (E = F, per head), "layerwise" (one E = F for keys, values and
heads). Layerwise sharing across *layers* would need the encoder to create one E and hand it
to every layer; inside one mixer "layerwise" is the most shared form that exists, and it is
exactly the LRA repository's per-layer kernel. There is no causal form: E mixes all positions.

Defaults follow the LRA repository: k = 16 (its `low_rank_features`), one kernel shared by keys,
values and heads, Xavier-uniform initialisation. The paper's own experiments use k = 128-256.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.registry import register

SHARING = ("none", "headwise", "key_value", "layerwise")


def _project_length(x, projection):
  """`[b, n, h, d]` x `[h or 1, n, k]` -> `[b, k, h, d]` (eq. 7: E K with E = projection^T)."""
  if projection.shape[0] == 1:
    return jnp.einsum("bnhd,nr->brhd", x, projection[0])
  return jnp.einsum("bnhd,hnr->brhd", x, projection)


def linformer_attention(q, k, v, key_projection, value_projection, *, q_mask=None,
                        kv_mask=None, dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """Pure function. q: `[b, lq, h, d]`, k/v: `[b, n, h, d]`; projections `[h, n, k]`.

  A projection may have a leading head axis of 1 (shared across heads); its length axis may
  be longer than n (the first n rows are used).
  """
  length = k.shape[1]
  if key_projection.shape[1] < length or value_projection.shape[1] < length:
    raise ValueError(f"linformer got {length} keys but its projections cover "
                     f"{key_projection.shape[1]} positions (max_len / kv_max_len)")
  if kv_mask is not None:   # padded tokens must not enter E K or F V
    keep = kv_mask[:, :, None, None]
    k, v = jnp.where(keep, k, 0.0), jnp.where(keep, v, 0.0)
  projected_k = _project_length(k, key_projection[:, :length])     # E K
  projected_v = _project_length(v, value_projection[:, :length])   # F V
  logits = jnp.einsum("bqhd,brhd->bhqr", q, projected_k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
  weights = jax.nn.softmax(logits, axis=-1)   # [b, h, L, k]: every projected slot is real
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  out = jnp.einsum("bhqr,brhd->bqhd", weights, projected_v)
  return masks.zero_padded_queries(out.astype(v.dtype), q_mask)   # E, F may be float32


@register("linformer", causal=False, cross=True, needs_max_len=True)
class LinformerAttention(nn.Module):
  """Low-rank attention with learned k x n length projections (`k` projected positions)."""
  max_len: int | None = None
  kv_max_len: int | None = None
  k: int = 16                   # projected length; LRA's low_rank_features default
  sharing: str = "layerwise"    # LRA's single kernel; see the module docstring
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    if self.sharing not in SHARING:
      raise ValueError(f"linformer sharing={self.sharing!r}; expected one of {SHARING}")
    if self.k < 1:
      raise ValueError(f"linformer k={self.k}; expected >= 1")
    n = self.kv_max_len or self.max_len
    if n is None:
      raise ValueError("linformer needs max_len (the n of its k x n projections)")
    heads = 1 if self.sharing in ("headwise", "layerwise") else q.shape[2]
    # Stored as [heads, n, k] (E^T), Xavier-uniform over (n, k) as in the LRA code.
    init = nn.initializers.xavier_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
    shape = (heads, n, self.k)
    key_projection = self.param("E", init, shape)
    if self.sharing in ("key_value", "layerwise"):
      value_projection = key_projection
    else:
      value_projection = self.param("F", init, shape)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return linformer_attention(q, k, v, key_projection, value_projection, q_mask=q_mask,
                               kv_mask=kv_mask, dropout_rate=self.dropout_rate,
                               dropout_rng=rng, deterministic=deterministic)
