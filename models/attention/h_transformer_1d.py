"""H-Transformer-1D (Zhu & Soricut, ACL 2021, "H-Transformer-1D: Fast One-Dimensional
Hierarchical Attention for Sequences"): hierarchical (H-matrix) attention in linear time.

Token hierarchy (sec. 5): level 0 is the sequence itself; level l+1 halves level l by merging
adjacent pairs. Queries and keys are coarsened by averaging a pair, values by summing it, so
one coarse attention entry stands for the 2^l x 2^l fine entries it covers (restriction for
Q, K; sum for V, as the paper's coarsening and the authors' flaxformer `token_hierarchy.py`).
At every level the sequence is cut into blocks of `block_size` = Nr tokens (the paper's
numerical rank). Attention matrix structure (sec. 6, the 1-D "tridiagonal" H-matrix):
  level 0:   the diagonal blocks and the super-/sub-diagonal blocks, exact;
  level l>0: the super-/sub-diagonal blocks of the coarse matrix, minus the quarter of each
             that level l-1 already covers (the authors' correction mask: rows in the second
             half of block n against the first half of block n+1, and its mirror),
so that every (i, j) is covered exactly once: at the first level where the blocks of i and j
are at most one apart. The top level has two blocks. Each level gives, per coarse query row,
unnormalised sums Y = exp(S) V and Z = exp(S) c, where c counts the real tokens in each coarse
key (2^l without padding); coarse rows are interpolated to fine rows by repetition (piecewise
constant, the paper's interpolation) and summed over levels; the output is Y / Z (the
normaliser computed by the same hierarchical product as Y, eq. for D = A 1).
Numerics: each level subtracts its own row max, and levels are combined top-down with the
running max (log-sum-exp rescaling), so all exponents are <= 0 (the authors subtract one
global max per head; a per-row max is the same maths and cannot underflow whole rows).

Number of levels: L is padded internally to Nr * 2^n. With 2 * Nr >= L there is one level
with two blocks (Nr is then ceil(L / 2)): diagonal + super + sub blocks cover the whole
matrix and the result is exact softmax attention. Cost O(L * Nr) time and memory.

Padding: padded queries, keys and values are zeroed first; a coarse query/key is the mean of
its non-empty children (the authors' "denominator" of non-empty children), a coarse value
the sum over real tokens, and a coarse key with no real token is masked and counts 0 in Z.
Blocks are aligned at position 0, so appended padding only adds blocks (and levels) made of
padding: outputs at real positions do not change.

Causal form (the paper's decoder, and the authors' `causal_mask`): only the diagonal block
(masked causally) at level 0 and the sub-diagonal blocks at every level, whose coarse keys
lie wholly before the query block; a coarse query is its first fine query (the authors'
sampling "to avoid the leakage from future positions"), not the mean. Exactly causal.

Deviations: the flaxformer code adds a learned hierarchical relative position bias (not in
the paper; omitted) and coarsens the un-projected inputs before the q/k/v projections (the
same for bias-free linear projections, as ours). Attention dropout drops entries of exp(S)
in Y only (the authors drop after computing the normaliser).

Incremental decoding (`decode=True`, registry kind "kv"): causally, token t's row at level l
uses the coarse query of its 2^l-group (q at position floor(t / 2^l) * 2^l, already seen) and
coarse keys/values of whole earlier groups (the sub-diagonal block, and at level 0 the diagonal
block up to t), all in the past. The cache keeps every query, key and value; a step coarsens
them (means of keys, sums of values over 2^l tokens: the same as the pairwise means for whole
groups of real tokens), forms each level's (Y, Z, row max) for t's row and combines the levels
with the running max, as the full forward.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import blocking, decoding, kv_cache, masks
from models.attention.registry import register


def hierarchy_shape(length: int, block_size: int) -> tuple[int, int]:
  """(Nr, number of levels): L is padded to Nr * 2^levels, levels >= 1 (two top blocks)."""
  if 2 * block_size >= length:
    return max(1, -(-length // 2)), 1   # one level: the exact limit
  levels = int(np.ceil(np.log2(-(-length // block_size))))
  return block_size, levels


def _pairs(x):
  """`[b, 2n, ...]` -> `[b, n, 2, ...]` (adjacent tokens of one coarse token)."""
  return x.reshape(x.shape[0], x.shape[1] // 2, 2, *x.shape[2:])


def _mean_of_real(x, real):
  """Mean over the non-empty children (x is zero at empty ones); 0 when both are empty."""
  count = real.sum(2).astype(x.dtype)
  return x.sum(2) / jnp.maximum(count, 1.0)[..., None, None]


def _coarsen(q, k, v, q_count, k_count, causal):
  """One level up (sec. 5): q, k averaged over a pair (causal: q of the first token), v and
  the real-token counts summed."""
  qp, kp = _pairs(q), _pairs(k)
  q_real, k_real = _pairs(q_count) > 0, _pairs(k_count) > 0
  q_up = qp[:, :, 0] if causal else _mean_of_real(qp, q_real)
  return (q_up, _mean_of_real(kp, k_real), _pairs(v).sum(2), _pairs(q_count).sum(2),
          _pairs(k_count).sum(2))


def _structure(level: int, offset: int, nr: int, causal: bool):
  """Bool `[nr, nr]`: which entries of the (block n, block n + offset) pair this level owns."""
  if offset == 0:   # the diagonal block, level 0 only
    return np.tril(np.ones((nr, nr), bool)) if causal else np.ones((nr, nr), bool)
  allowed = np.ones((nr, nr), bool)
  if level > 0:    # the quarter that level - 1 owns (authors' correction mask)
    half = nr // 2
    if offset > 0:
      allowed[half:, :half] = False
    else:
      allowed[:half, half:] = False
  return allowed


def _level(q, k, v, k_count, level, nr, causal, dropout_rate, rng, deterministic):
  """Per coarse query row: Y = sum exp(S - m) v, Z = sum exp(S - m) c and the row max m.

  q, k, v `[b, m, h, d]` (m = blocks * nr) -> y `[b, m, h, d]`, z and m `[b, m, h]`."""
  qb, kb, vb = (blocking.to_blocks(t, nr) for t in (q, k, v))
  cb = blocking.to_blocks(k_count, nr)   # [b, n, nr]
  n = qb.shape[1]
  offsets = (0,) if level == 0 else ()
  offsets = (-1,) + offsets + (() if causal else (1,))   # sub-, (diagonal,) super-diagonal
  k_win, v_win = (blocking.neighbour_blocks(t, offsets) for t in (kb, vb))
  c_win = blocking.neighbour_blocks(cb, offsets)   # [b, n, K]; 0 out of range
  structure = np.concatenate([_structure(level, o, nr, causal) for o in offsets], axis=1)
  allowed = (c_win > 0)[:, :, None, None, :] & structure   # [b, n, 1, nr, K]
  logits = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, k_win)
  logits = jnp.where(allowed, logits, masks.big_negative(logits.dtype))
  top = jax.lax.stop_gradient(logits.max(-1))   # [b, n, h, nr]
  weights = jnp.where(allowed, jnp.exp(logits - top[..., None]), 0.0)
  z = jnp.einsum("bnhqk,bnk->bnqh", weights, c_win.astype(weights.dtype))
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, jax.random.fold_in(rng, level))
  y = jnp.einsum("bnhqk,bnkhd->bnqhd", weights, v_win)
  flat = lambda t: t.reshape(t.shape[0], n * nr, *t.shape[3:])
  return flat(y), flat(z), flat(jnp.swapaxes(top, 2, 3))


def h_attention(q, k, v, *, block_size=16, causal=False, q_mask=None, kv_mask=None,
                dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """Pure function. q/k/v `[b, l, h, d]` (self-attention), masks bool `[b, l]`."""
  blocking.check_self_attention(q, k, "h_transformer_1d")
  if block_size < 2 or block_size % 2:
    raise ValueError(f"h_transformer_1d: block_size={block_size}; expected an even number >= 2 "
                     "(the correction of coarse blocks splits a block in halves)")
  batch, length, _, depth = q.shape
  out_dtype = q.dtype
  nr, levels = hierarchy_shape(length, block_size)
  padded = nr * 2 ** levels
  compute = jnp.promote_types(q.dtype, jnp.float32)   # sums over levels in float32
  q_real = blocking.key_validity(q_mask, batch, length, 1)
  k_real = blocking.key_validity(kv_mask, batch, length, 1)
  pad = lambda t: jnp.pad(t, [(0, 0), (0, padded - length)] + [(0, 0)] * (t.ndim - 2))
  q_real, k_real = pad(q_real), pad(k_real)
  zero_pads = lambda t, real: jnp.where(real[:, :, None, None], pad(t.astype(compute)), 0.0)
  q = zero_pads(q, q_real) / jnp.sqrt(jnp.asarray(depth, compute))
  k, v = zero_pads(k, k_real), zero_pads(v, k_real)
  q_count, k_count = q_real.astype(compute), k_real.astype(compute)

  results = []
  for level in range(levels):
    if level > 0:
      q, k, v, q_count, k_count = _coarsen(q, k, v, q_count, k_count, causal)
    results.append(_level(q, k, v, k_count, level, nr, causal, dropout_rate, dropout_rng,
                          deterministic))

  # Interpolate top-down (repeat each coarse row over its two children) and add each level,
  # rescaling to the running row max.
  y, z, top = results[-1]
  up = lambda t: jnp.repeat(t, 2, axis=1)
  for y_l, z_l, top_l in reversed(results[:-1]):
    y, z, top_up = up(y), up(z), up(top)
    new_top = jnp.maximum(top_l, top_up)
    own, inherited = jnp.exp(top_l - new_top), jnp.exp(top_up - new_top)
    y = own[..., None] * y_l + inherited[..., None] * y
    z = own * z_l + inherited * z
    top = new_top
  out = y / jnp.where(z > 0, z, 1.0)[..., None]
  return masks.zero_padded_queries(out[:, :length].astype(out_dtype), q_mask)


@register("h_transformer_1d", causal=True, cross=False, decode="kv")
class HTransformer1DAttention(nn.Module):
  """Hierarchical attention; `block_size` is the paper's Nr (16)."""
  block_size: int = 16
  causal: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if decode:
      stepping, index, cache, k, v = kv_cache.decode_full_cache(self, q, k, v, queries=True)
      if stepping:
        return self._decode(q, *cache, index)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return h_attention(q, k, v, block_size=self.block_size, causal=self.causal, q_mask=q_mask,
                       kv_mask=kv_mask, dropout_rate=self.dropout_rate, dropout_rng=rng,
                       deterministic=deterministic)

  def _decode(self, q, queries, keys, values, index):
    """Token at position `index`: its row of every level (causal structure), combined."""
    decoding.check_one_token(q, "h_transformer_1d")
    batch, length, heads, depth = queries.shape
    if self.block_size < 2 or self.block_size % 2:
      raise ValueError(f"h_transformer_1d: block_size={self.block_size}; expected an even "
                       "number >= 2")
    nr, levels = hierarchy_shape(length, self.block_size)
    padded = nr * 2 ** levels
    compute = jnp.promote_types(q.dtype, jnp.float32)
    pad = lambda t: jnp.pad(t.astype(compute), [(0, 0), (0, padded - length), (0, 0), (0, 0)])
    queries = pad(queries) / jnp.sqrt(jnp.asarray(depth, compute))
    keys = pad(decoding.repeat_kv(keys, heads))
    values = pad(decoding.repeat_kv(values, heads))
    neg = masks.big_negative(compute)
    half = nr // 2
    rows = []
    for level in range(levels):
      group = 2 ** level
      coarse = lambda t: t.reshape(batch, padded // group, group, heads, depth)
      k_l, v_l = coarse(keys).mean(2), coarse(values).sum(2)   # [b, m, h, d]
      position = index // group                                 # t's coarse position
      block, row = position // nr, position % nr
      q_l = jax.lax.dynamic_index_in_dim(queries, position * group, axis=1, keepdims=False)
      # the sub-diagonal block (coarse positions of block - 1), and at level 0 the diagonal
      start = jnp.maximum(block - 1, 0) * nr
      k_win = jax.lax.dynamic_slice_in_dim(k_l, start, nr, axis=1)
      v_win = jax.lax.dynamic_slice_in_dim(v_l, start, nr, axis=1)
      allowed = jnp.broadcast_to(block >= 1, (nr,))
      if level > 0:  # the quarter level - 1 owns: first-half rows x second-half columns
        allowed = allowed & ~((row < half) & (jnp.arange(nr) >= half))
      if level == 0:
        k_win = jnp.concatenate(
            [k_win, jax.lax.dynamic_slice_in_dim(k_l, block * nr, nr, axis=1)], axis=1)
        v_win = jnp.concatenate(
            [v_win, jax.lax.dynamic_slice_in_dim(v_l, block * nr, nr, axis=1)], axis=1)
        allowed = jnp.concatenate([allowed, jnp.arange(nr) <= row])
      logits = jnp.einsum("bhd,bkhd->bhk", q_l, k_win)
      logits = jnp.where(allowed, logits, neg)
      top = logits.max(-1)                                      # [b, h]
      weights = jnp.where(allowed, jnp.exp(logits - top[..., None]), 0.0)
      rows.append((jnp.einsum("bhk,bkhd->bhd", weights, v_win), weights.sum(-1) * group, top))
    top = jnp.max(jnp.stack([t for _, _, t in rows]), axis=0)
    y = sum(jnp.exp(t - top)[..., None] * y_l for y_l, _, t in rows)
    z = sum(jnp.exp(t - top) * z_l for _, z_l, t in rows)
    out = y / jnp.where(z > 0, z, 1.0)[..., None]
    return out[:, None].astype(q.dtype)
