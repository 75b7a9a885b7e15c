"""Block-local attention: the 1D local attention of the Image Transformer (Parmar et al. 2018,
sec. 3.2, "Local 1D Attention"), as LRA's `local` baseline.

The sequence is cut into query blocks of `block_size` positions; every query attends with
softmax(q k^T / sqrt(d)) only to the keys of its own block (LRA's form, `look_back=False`)
or, with `look_back=True`, to its own block and the previous one (the Image Transformer's
memory block of preceding positions). The causal form masks keys after the query inside that
window. Cost O(L * block) in time and memory: scores are `[n_blocks, block, (1|2) * block]`.
Lengths that are not a multiple of the block are padded internally (padded keys masked).
`score_bias` (the base's ALiBi / T5 option) is evaluated per block on the window's positions.

Incremental decoding (`decode=True`, registry kind "window"): query i (block m = i // B) sees
keys from position m*B (or (m-1)*B with look-back) up to i, all within the last B (2B) tokens,
so the cache is a ring buffer of B (2B) keys/values and their positions, never L.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import blocking, decoding, kv_cache, masks
from models.attention.registry import register


def local_attention(q, k, v, *, block_size=50, look_back=False, causal=False, q_mask=None,
                    kv_mask=None, dropout_rate=0.0, dropout_rng=None, deterministic=True,
                    score_bias=None):
  """Pure function. q/k/v `[b, l, h, d]` (self-attention), masks bool `[b, l]`;
  `score_bias`: fn(q_pos, k_pos) -> `[h, lq, lk]` added to the scaled logits."""
  blocking.check_self_attention(q, k, "local")
  if block_size < 1:
    raise ValueError(f"local: block_size={block_size}; expected a positive integer")
  batch, length, _, depth = q.shape
  block = min(block_size, length)  # one block holding everything when block_size >= length
  qb, kb, vb = (blocking.to_blocks(blocking.pad_to_blocks(t, block), block) for t in (q, k, v))
  n = qb.shape[1]
  valid = blocking.to_blocks(blocking.key_validity(kv_mask, batch, length, block), block)
  q_pos = blocking.block_positions(n, block)  # [1, n, B]

  offsets = (-1, 0) if look_back else (0,)  # previous block as the "memory" (sec. 3.2)
  k_win = blocking.neighbour_blocks(kb, offsets)  # [b, n, K, h, d]
  v_win = blocking.neighbour_blocks(vb, offsets)
  k_pos = blocking.neighbour_blocks(q_pos, offsets, fill=-1)  # [1, n, K]; -1 = before start
  k_valid = blocking.neighbour_blocks(valid, offsets, fill=False)  # [b, n, K]

  allowed = (k_valid & (k_pos >= 0))[:, :, None, None, :]  # [b, n, 1, 1, K]
  if causal:
    allowed = allowed & (k_pos[:, :, None, :] <= q_pos[:, :, :, None])[:, :, None]

  # 1/sqrt(d) on the logits, where it fuses into the softmax (no extra pass over q).
  logits = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, k_win) / jnp.sqrt(depth).astype(q.dtype)
  if score_bias is not None:  # [n, h, B, K], one block's bias at a time (window slots < 0 masked)
    logits = logits + jax.vmap(score_bias)(q_pos[0], k_pos[0])[None].astype(logits.dtype)
  weights = blocking.joint_softmax([logits], [allowed])
  weights, = blocking.dropout(weights, dropout_rate, dropout_rng, deterministic)
  out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights, v_win)
  out = blocking.from_blocks(out)[:, :length]
  return masks.zero_padded_queries(out, q_mask)


@register("local", causal=True, cross=False, score_bias=True, decode="window")
class LocalAttention(nn.Module):
  """Block-local attention; `block_size` 50 as LRA's local attention model."""
  block_size: int = 50
  look_back: bool = False
  causal: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               score_bias=None, decode=False):
    if decode:
      stepping, index = decoding.decode_index(self)
      if stepping:
        return self._decode(q, k, v, index, score_bias)
      # the init call: a window sized by its length; the ordinary causal forward
      kv_cache.window_cache(self, k, v, False, index, self._window_size(k.shape[1]))
      k, v = decoding.repeat_kv(k, q.shape[2]), decoding.repeat_kv(v, q.shape[2])
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return local_attention(q, k, v, block_size=self.block_size, look_back=self.look_back,
                           causal=self.causal, q_mask=q_mask, kv_mask=kv_mask,
                           dropout_rate=self.dropout_rate, dropout_rng=rng,
                           deterministic=deterministic, score_bias=score_bias)

  def _window_size(self, length):
    block = max(min(self.block_size, length), 1)
    return 2 * block if self.look_back else block

  def _decode(self, q, k, v, index, score_bias):
    """Token at position `index`: sec. 3.2's query block (and memory block) up to the token."""
    decoding.check_one_token(q, "local")
    size = self.get_variable("cache", "cached_position").shape[0]
    block = size // 2 if self.look_back else size
    keys, values, pos = kv_cache.window_cache(self, k, v, True, index, size)
    first = (index // block - (1 if self.look_back else 0)) * block  # earliest key seen
    allowed = (pos >= 0) & (pos >= first) & (pos <= index)
    bias = None
    if score_bias is not None:
      bias = score_bias(index[None], jnp.maximum(pos, 0))[:, 0][None]
    return kv_cache.attend_one(q, keys, values, allowed[None, None], bias=bias,
                               float32_softmax=False)
