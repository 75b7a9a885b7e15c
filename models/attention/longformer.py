"""Longformer attention (Beltagy et al. 2020, sec. 3.1): a sliding window plus global tokens.

Sliding window: query i attends to keys j = i + dilation * t with |t| <= window (one-sided
width w; "dilated sliding window" when dilation > 1; the causal form keeps t <= 0).
Global attention: the tokens at `global_positions` (default position 0, the CLS token) attend
to every key and every query attends to them (symmetric, sec. 3.1); in the causal form both
directions respect j <= i. One softmax per query over the union of its window and the global
keys (a global key inside the window is counted once). We reuse the q/k/v projections for the
global part (the paper's separate global projections are not implemented).
Banded computation: the sequence is cut into blocks of `window * dilation` positions; each query
block scores its own and neighbouring key blocks and masks them to the band, O(L * w * dilation);
global rows cost O(g * L). No `[L, L]` array is built.

Incremental decoding (`decode=True`, registry kind "kv"): a causal global query at position p
attends to every key j <= p (sec. 3.1), so a window of the last `window * dilation` tokens plus
the global keys is not enough in general; the cache keeps every key/value `[b, L, kv_heads, d]`
and each step applies the pattern's row (the band j = i - t*dilation, 0 <= t <= window, and the
global keys; every j <= i for a global query).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import blocking, decoding, kv_cache, masks
from models.attention.registry import register


def _global_indices(global_positions, length):
  positions = sorted(set(int(p) for p in global_positions))
  if any(p < 0 or p >= length for p in positions):
    raise ValueError(f"longformer: global_positions={tuple(global_positions)} must lie in "
                     f"[0, {length}) for sequences of length {length}")
  return np.asarray(positions, np.int32)


def longformer_attention(q, k, v, *, window=256, dilation=1, global_positions=(0,),
                         causal=False, q_mask=None, kv_mask=None, dropout_rate=0.0,
                         dropout_rng=None, deterministic=True):
  """Pure function. q/k/v `[b, l, h, d]` (self-attention), masks bool `[b, l]`."""
  blocking.check_self_attention(q, k, "longformer")
  if window < 1 or dilation < 1:
    raise ValueError(f"longformer: window={window}, dilation={dilation}; expected both >= 1")
  batch, length, _, depth = q.shape
  span = window * dilation  # farthest key the window reaches
  block = min(span, length)
  g_pos = _global_indices(global_positions, length)
  q = q / jnp.sqrt(depth).astype(q.dtype)
  q_pad, k_pad, v_pad = (blocking.pad_to_blocks(t, block) for t in (q, k, v))
  qb, kb, vb = (blocking.to_blocks(t, block) for t in (q_pad, k_pad, v_pad))
  n = qb.shape[1]
  valid_flat = blocking.key_validity(kv_mask, batch, length, block)  # [b, n*B]
  valid = blocking.to_blocks(valid_flat, block)
  q_pos = blocking.block_positions(n, block)  # [1, n, B]
  if dropout_rng is not None:
    band_rng, global_rng = jax.random.split(dropout_rng)
  else:
    band_rng = global_rng = None

  # Sliding window over the neighbouring blocks, masked to the (dilated) band.
  offsets = (-1, 0) if causal else (-1, 0, 1)
  k_win, v_win = (blocking.neighbour_blocks(t, offsets) for t in (kb, vb))
  k_pos = blocking.neighbour_blocks(q_pos, offsets, fill=-1)  # [1, n, K]
  k_valid = blocking.neighbour_blocks(valid, offsets, fill=False)
  delta = q_pos[:, :, :, None] - k_pos[:, :, None, :]  # i - j
  band = (k_pos[:, :, None, :] >= 0) & (jnp.abs(delta) <= span) & (delta % dilation == 0)
  if causal:
    band = band & (delta >= 0)
  is_global_key = (k_pos[..., None] == jnp.asarray(g_pos)).any(-1)  # [1, n, K]
  band = band & ~is_global_key[:, :, None, :]  # global keys join below, once
  logits = [jnp.einsum("bnqhd,bnkhd->bnhqk", qb, k_win)]
  allowed = [band[:, :, None] & k_valid[:, :, None, None, :]]

  # Every query attends to the global keys (sec. 3.1, symmetric global attention).
  if len(g_pos):
    k_glob, v_glob = k[:, g_pos], v[:, g_pos]  # [b, g, h, d]
    allowed_glob = valid_flat[:, g_pos][:, None, None, None, :]
    if causal:
      allowed_glob = allowed_glob & (jnp.asarray(g_pos) <= q_pos[..., None])[:, :, None]
    logits.append(jnp.einsum("bnqhd,bghd->bnhqg", qb, k_glob))
    allowed.append(allowed_glob)
  weights = blocking.joint_softmax(logits, allowed)
  weights = blocking.dropout(weights, dropout_rate, band_rng, deterministic)
  out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights[0], v_win)
  if len(g_pos):
    out = out + jnp.einsum("bnhqg,bghd->bnqhd", weights[1], v_glob)
  out = blocking.from_blocks(out)

  # Global queries attend to every key: g full rows, O(g * L).
  if len(g_pos):
    logits_g = jnp.einsum("bghd,bkhd->bhgk", q[:, g_pos], k_pad)
    allowed_g = valid_flat[:, None, None, :]
    if causal:
      allowed_g = allowed_g & (jnp.arange(k_pad.shape[1]) <= g_pos[:, None])[None, None]
    weights_g = blocking.joint_softmax([logits_g], [allowed_g])
    weights_g, = blocking.dropout(weights_g, dropout_rate, global_rng, deterministic)
    out = out.at[:, g_pos].set(jnp.einsum("bhgk,bkhd->bghd", weights_g, v_pad))
  return masks.zero_padded_queries(out[:, :length], q_mask)


@register("longformer", causal=True, cross=False, decode="kv")
class LongformerAttention(nn.Module):
  """Defaults: one-sided window 256 (LRA's sliding_window_size 512), CLS (position 0) global."""
  window: int = 256
  dilation: int = 1
  global_positions: Sequence[int] = (0,)
  causal: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if decode:
      stepping, index, cache, k, v = kv_cache.decode_full_cache(self, q, k, v)
      if stepping:
        return self._decode(q, *cache, index)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return longformer_attention(
        q, k, v, window=self.window, dilation=self.dilation,
        global_positions=tuple(self.global_positions), causal=self.causal, q_mask=q_mask,
        kv_mask=kv_mask, dropout_rate=self.dropout_rate, dropout_rng=rng,
        deterministic=deterministic)

  def _decode(self, q, keys, values, index):
    """Token at position `index`: its row of the causal pattern over the cached keys."""
    decoding.check_one_token(q, "longformer")
    length = keys.shape[1]
    g_pos = jnp.asarray(_global_indices(self.global_positions, length))
    j = jnp.arange(length)
    delta = index - j
    is_global = (j[:, None] == g_pos).any(-1)  # [L]
    band = (delta <= self.window * self.dilation) & (delta % self.dilation == 0)
    allowed = (delta >= 0) & (band | is_global | (index == g_pos).any())
    return kv_cache.attend_one(q, keys, values, allowed[None, None], float32_softmax=False)
