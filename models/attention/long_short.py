"""Long-Short Transformer (Transformer-LS; Zhu, Ping, Xiao, Shoeybi, Goldstein, Anandkumar,
Catanzaro, NeurIPS 2021, "Long-Short Transformer: Efficient Transformers for Language and
Vision"): one softmax over a short-term sliding window and a long-term dynamic projection.

Short-term attention (sec. 3.1): the sequence is cut into disjoint segments of `window` = w
tokens; every query attends to the keys of its own segment and w/2 tokens on each side of it
(2w keys; the authors' code takes max(w // 2, 1) per side, so w = 1 sees 3 keys).
Long-term attention via dynamic projection (sec. 3.2, eq. 3-4): P = softmax(X W^P) over the
positions (W^P `[features, heads * r]` with a bias, X the un-projected input: the paper's
"K W^P" is written on the key *input*, K = X for self-attention, and the authors' code reads X),
K_bar = P^T K W^K, V_bar = P^T V W^V: r projected keys and values per head. Padded positions
get zero projection weight (the authors mask them to -inf before the softmax).
Aggregation (sec. 3.3, eq. 5): each query takes one softmax over the concatenation
[K_bar; window keys] with the DualLN: LN_L on the local keys and values (before the window, and
before projecting, as the authors' code), LN_G on K_bar and V_bar; each LayerNorm acts on the
heads-concatenated features and is shared by keys and values (the authors' `dual_ln_l`,
`dual_ln_s`). Cost O(L * (2w + r)); no `[L, L]` array.

Settings: `window` w and `rank` r. Defaults (w, r) = (8, 32), the paper's "Transformer-LS
(w, r = 8, 32)" LRA row (the authors' run_*.sh); rank 0 drops the long-term part.
`project_from_inputs=False` computes P from each head's keys (after LN_L), P = softmax(K_h W^P_h)
(W^P `[heads, head_dim, r]`, no bias): a variant for callers that have no `inputs_q`.

Exactness limit: rank 0 and w >= L is exact softmax attention over LN_L(K), LN_L(V); without
the LayerNorms (the pure function) it is exact attention.

Not implemented: the causal form (sec. 3.4, a segment-wise dynamic projection in which a query
sees the projections of earlier segments only, O(L^2 r / l)): registered causal=False. No RoPE
(rope=False): LN_L would act on the rotated keys, undoing the relative-position property, and
K_bar has no position. The authors' optional depthwise convolution on V (LRA `conv_kernel_size`,
off in their runs) and their CLS-token special case are omitted.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import blocking, masks
from models.attention.registry import register


def dynamic_projection(k, v, logits, kv_mask=None):
  """Eq. 3-4: P = softmax over positions of `logits` `[b, l, h, r]`; returns K_bar, V_bar
  `[b, r, h, d]`. Padded positions get weight 0 (a batch row with no real token: all 0)."""
  real = blocking.key_validity(kv_mask, k.shape[0], k.shape[1], 1)[:, :, None, None]
  logits = jnp.where(real, logits.astype(jnp.float32), -jnp.inf)
  top = jax.lax.stop_gradient(jnp.max(logits, axis=1, keepdims=True))
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  weights = jnp.where(real, jnp.exp(logits - top), 0.0)
  total = weights.sum(1, keepdims=True)
  weights = (weights / jnp.where(total > 0, total, 1.0)).astype(k.dtype)
  return (jnp.einsum("blhr,blhd->brhd", weights, k), jnp.einsum("blhr,blhd->brhd", weights, v))


def long_short_attention(q, k, v, k_bar=None, v_bar=None, *, window=8, q_mask=None,
                         kv_mask=None, dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """Pure function: one softmax over [K_bar; sliding-window keys] (eq. 5).

  q/k/v `[b, l, h, d]` (self-attention; k, v as the window sees them, i.e. after LN_L),
  k_bar/v_bar `[b, r, h, d]` (after LN_G) or None (no long-term part); masks bool `[b, l]`."""
  blocking.check_self_attention(q, k, "long_short")
  if window < 1:
    raise ValueError(f"long_short: window={window}; expected >= 1")
  batch, length, _, depth = q.shape
  out_dtype = q.dtype
  compute = jnp.promote_types(q.dtype, jnp.float32)
  q, k, v = (t.astype(compute) for t in (q, k, v))
  q = q / jnp.sqrt(jnp.asarray(depth, compute))
  block = min(window, length)   # one segment holding everything when w >= L
  side = max(window // 2, 1)    # w/2 keys each side of the segment (sec. 3.1)
  qb, kb, vb = (blocking.to_blocks(blocking.pad_to_blocks(t, block), block) for t in (q, k, v))
  n = qb.shape[1]
  valid = blocking.to_blocks(blocking.key_validity(kv_mask, batch, length, block), block)
  start = blocking.block_positions(n, block)[:, :, :1]  # [1, n, 1]: each segment's start
  offsets = (-1, 0, 1)   # side <= block, so the neighbouring segments hold the whole window
  k_win, v_win = (blocking.neighbour_blocks(t, offsets) for t in (kb, vb))
  k_pos = blocking.neighbour_blocks(blocking.block_positions(n, block), offsets, fill=-1)
  k_valid = blocking.neighbour_blocks(valid, offsets, fill=False)
  in_window = (k_pos >= 0) & (k_pos >= start - side) & (k_pos < start + block + side)
  logits = [jnp.einsum("bnqhd,bnkhd->bnhqk", qb, k_win)]
  allowed = [(in_window & k_valid)[:, :, None, None, :]]
  if k_bar is not None:   # long-term part: every projected slot is real
    logits.append(jnp.einsum("bnqhd,brhd->bnhqr", qb, k_bar.astype(compute)))
    allowed.append(jnp.ones((1, 1, 1, 1, k_bar.shape[1]), bool))
  weights = blocking.joint_softmax(logits, allowed)
  weights = blocking.dropout(weights, dropout_rate, dropout_rng, deterministic)
  out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights[0], v_win)
  if k_bar is not None:
    out = out + jnp.einsum("bnhqr,brhd->bnqhd", weights[1], v_bar.astype(compute))
  out = blocking.from_blocks(out)[:, :length]
  return masks.zero_padded_queries(out.astype(out_dtype), q_mask)


def _heads_layer_norm(norm, x):
  """LayerNorm over the heads-concatenated features of `[b, l, h, d]` (the authors' DualLN)."""
  b, l, h, d = x.shape
  return norm(x.reshape(b, l, h * d)).reshape(b, l, h, d)


@register("long_short", causal=False, cross=False, rope=False)
class LongShortAttention(nn.Module):
  """Transformer-LS attention: sliding window `window` + dynamic projection of rank `rank`."""
  window: int = 8
  rank: int = 32
  project_from_inputs: bool = True
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    if self.rank < 0:
      raise ValueError(f"long_short: rank={self.rank}; expected >= 0")
    heads, depth = k.shape[2], k.shape[3]
    # DualLN (sec. 3.3): LN_L on the local keys/values, shared by both.
    local_norm = nn.LayerNorm(dtype=k.dtype, name="local_norm")
    k, v = _heads_layer_norm(local_norm, k), _heads_layer_norm(local_norm, v)
    k_bar = v_bar = None
    if self.rank > 0:
      if self.project_from_inputs:
        if inputs_q is None:
          raise ValueError("long_short computes its dynamic projection from inputs_q (the "
                           "un-projected input, sec. 3.2); the mixer was called with "
                           "inputs_q=None (set attention_kwargs.project_from_inputs=False to "
                           "project from the keys)")
        logits = nn.DenseGeneral((heads, self.rank), dtype=jnp.float32,
                                 name="projection")(inputs_q)   # X W^P, [b, l, h, r]
      else:
        kernel = self.param("projection", nn.initializers.lecun_normal(batch_axis=(0,)),
                            (heads, depth, self.rank))
        logits = jnp.einsum("blhd,hdr->blhr", k.astype(jnp.float32), kernel)
      k_bar, v_bar = dynamic_projection(k, v, logits, kv_mask)   # P^T LN_L(K), P^T LN_L(V)
      global_norm = nn.LayerNorm(dtype=k.dtype, name="global_norm")   # LN_G
      k_bar, v_bar = _heads_layer_norm(global_norm, k_bar), _heads_layer_norm(global_norm, v_bar)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return long_short_attention(q, k, v, k_bar, v_bar, window=self.window, q_mask=q_mask,
                                kv_mask=kv_mask, dropout_rate=self.dropout_rate,
                                dropout_rng=rng, deterministic=deterministic)
