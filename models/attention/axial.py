"""Axial attention (Ho et al. 2019, "Axial Attention in Multidimensional Transformers",
arXiv:1912.12180): softmax attention along one axis of a multidimensional tensor at a time.

The length-L sequence is laid out in raster order on a grid of rows of `cols` positions:
`shape=(rows, cols)` gives the data's own grid (an image's 32 x 32 pixels; L must be at most
rows * cols), `shape=()` (default) folds a 1-D input into a near-square grid, cols = ceil(sqrt(L)),
rows = ceil(L / cols). The tail of the last row is padded internally and masked.

Bidirectional form: row attention, then column attention over the row attention's output, inside one
mixer (the paper's axial attention: a row layer followed by a column layer gives every position the
whole grid as its receptive field; its unmasked blocks alternate the two). With A_row and A_col the
row-wise and column-wise softmax(q k^T / sqrt(d)) of the same q and k,

  R[i, j] = sum_j' A_row[(i,j),(i,j')] v[i, j'],     y[i, j] = sum_i' A_col[(i,j),(i',j)] R[i', j],

so every position reaches every other in one layer at cost O(L (rows + cols)) in time and memory
(O(L^1.5) for the near-square fold): no [L, L] array exists. All heads do both steps.

Causal form, exactly causal in raster order, with the decomposition of the paper's Axial Transformer
(its outer and inner decoders): the rows above are summarised by unmasked row attention and read
through column attention masked to strictly earlier rows (the "outer decoder" on the input shifted
down a row); the current row by row attention masked to columns j' <= j (the "inner decoder"):

  y[i, j] = sum_{i'<i} A_col[(i,j),(i',j)] R_full[i', j] + A_col[(i,j),(i,j)] R_causal[i, j],

with one column softmax over rows i' <= i. Position (i, j) thus reaches every earlier row whole and
row i up to column j: every raster-order predecessor, and nothing after it.

Deviations: the paper's two steps are separate layers (each with its own projections, residual,
norm and feed-forward) and its Axial Transformer adds the outer decoder's output to the inner
decoder's input; here both steps share the block's one q/k/v projection and are composed inside
one mixer (no projection between them), so a single block is an axial layer pair. Padding: padded
keys are masked in both steps, and a padded position is never an intermediate of the column step
(its row output would depend on its own, padded, query); with trailing padding a real position is
then reached only through the real positions of its column. With `shape=()` the fold depends on the
padded length L, so the same example padded to another length gives other outputs (LRA pads every
example of a task to one length); with `shape` given, appended padding only fills the grid.

Incremental decoding (`decode=True`, registry kind "kv"): the token at (i, j) needs its row up
to column j (the inner decoder), its column's keys in rows i' <= i and, for every earlier row
i', the full row attention output R_full[i', j] (whole earlier rows: all in the past). The
cache keeps every query, key and value (queries `[b, L, h, d]`, keys/values `[b, L, kv_heads,
d]`); each step recomputes column j's R_full over the earlier rows (O(L d)) and combines as
above.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import blocking, decoding, kv_cache, masks
from models.attention.registry import register


def grid_shape(length: int, shape=()) -> tuple[int, int]:
  """(rows, cols) of the raster grid holding `length` positions."""
  if not shape:
    cols = max(math.isqrt(length - 1) + 1, 1) if length > 1 else 1
    return -(-length // cols), cols
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"axial shape={tuple(shape)} (config.model.attention_kwargs); expected () "
                     "or (rows, cols) with positive sizes")
  rows, cols = shape
  if length > rows * cols:
    raise ValueError(f"axial shape={tuple(shape)} holds {rows * cols} positions but the sequence "
                     f"has {length} (a CLS token? the axial configs use mean pooling)")
  return -(-length // cols), cols


def _attend(q, k, allowed, scale, compute):
  """Softmax attention along axis 3 of the grids `[b, n, lq|lk, h, d]` (n = independent lines);
  `allowed` broadcasts to `[b, n, h, lq, lk]`. Returns weights `[b, n, h, lq, lk]`."""
  logits = jnp.einsum("bnqhd,bnkhd->bnhqk", q, k, preferred_element_type=compute) / scale
  return blocking.joint_softmax([logits], [allowed])[0]


def axial_attention(q, k, v, *, shape=(), causal=False, q_mask=None, kv_mask=None,
                    dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """Pure function. q/k/v `[b, l, h, d]` (self-attention), masks bool `[b, l]`."""
  blocking.check_self_attention(q, k, "axial")
  batch, length, _, depth = q.shape
  rows, cols = grid_shape(length, shape)
  compute = jnp.promote_types(q.dtype, jnp.float32)
  scale = jnp.sqrt(depth).astype(compute)
  valid = blocking.key_validity(kv_mask, batch, length, cols)   # [b, rows * cols]
  grid = lambda t: blocking.to_blocks(blocking.pad_to_blocks(t, cols), cols)  # [b, R, C, ...]
  qg, kg, vg = grid(q), grid(k), grid(v.astype(compute))
  vmask = grid(valid)                                                         # [b, R, C]
  rngs = [None, None, None]
  if not deterministic and dropout_rate > 0.0:
    rngs = list(jax.random.split(dropout_rng, 3))
  drop = lambda w, rng: w if rng is None else masks.dropout_weights(w, dropout_rate, rng)

  # Row step (along the columns of each row): lines = rows.
  row_keys = vmask[:, :, None, None, :]                                       # [b, R, 1, 1, C]
  a_row = drop(_attend(qg, kg, row_keys, scale, compute), rngs[0])
  r_full = jnp.einsum("brhqk,brkhd->brqhd", a_row, vg)                        # [b, R, C, h, d]

  # Column step (along the rows of each column): lines = columns.
  col = lambda t: jnp.swapaxes(t, 1, 2)                                       # [b, C, R, ...]
  col_keys = col(vmask)[:, :, None, None, :]                                  # [b, C, 1, 1, R]
  if not causal:
    a_col = drop(_attend(col(qg), col(kg), col_keys, scale, compute), rngs[1])
    out = jnp.einsum("bchqk,bckhd->bcqhd", a_col, col(r_full))
  else:
    tri = jnp.arange(cols)[None, :] <= jnp.arange(cols)[:, None]              # j' <= j
    a_row_causal = drop(_attend(qg, kg, row_keys & tri, scale, compute), rngs[2])
    r_causal = jnp.einsum("brhqk,brkhd->brqhd", a_row_causal, vg)
    earlier = jnp.arange(rows)[None, :] <= jnp.arange(rows)[:, None]          # i' <= i
    a_col = drop(_attend(col(qg), col(kg), col_keys & earlier, scale, compute), rngs[1])
    strict = jnp.arange(rows)[None, :] < jnp.arange(rows)[:, None]            # i' < i
    above = jnp.einsum("bchqk,bckhd->bcqhd", jnp.where(strict, a_col, 0.0), col(r_full))
    diagonal = jnp.diagonal(a_col, axis1=-2, axis2=-1)                        # [b, C, h, R]
    out = above + jnp.swapaxes(diagonal, 2, 3)[..., None] * col(r_causal)
  out = col(out).reshape(batch, rows * cols, *out.shape[3:])[:, :length]
  return masks.zero_padded_queries(out.astype(q.dtype), q_mask)


@register("axial", causal=True, cross=False, decode="kv")
class AxialAttention(nn.Module):
  """Row then column attention on a raster grid (`shape` = (rows, cols), or () to fold 1-D)."""
  shape: tuple[int, ...] = ()
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
    return axial_attention(q, k, v, shape=tuple(self.shape), causal=self.causal, q_mask=q_mask,
                           kv_mask=kv_mask, dropout_rate=self.dropout_rate, dropout_rng=rng,
                           deterministic=deterministic)

  def _decode(self, q, queries, keys, values, index):
    """Token at (i, j) = divmod(index, cols): the causal form's y[i, j] from the caches."""
    decoding.check_one_token(q, "axial")
    batch, length, heads, depth = queries.shape
    rows, cols = grid_shape(length, tuple(self.shape))
    compute = jnp.promote_types(q.dtype, jnp.float32)
    scale = jnp.sqrt(depth).astype(compute)
    grid = lambda t: blocking.to_blocks(blocking.pad_to_blocks(t, cols), cols)  # [b, R, C, ...]
    qg = grid(queries)
    kg = grid(decoding.repeat_kv(keys, heads))
    vg = grid(decoding.repeat_kv(values, heads).astype(compute))
    valid = (jnp.arange(rows * cols) < length).reshape(rows, cols)
    row, column = index // cols, index % cols
    logits = lambda a, b, spec: jnp.einsum(spec, a, b, preferred_element_type=compute) / scale
    softmax = lambda x, allowed: blocking.joint_softmax([x], [allowed])[0]
    # R_full[i', j] for every row i' (only i' < i are used): row attention of query (i', j).
    q_col = jax.lax.dynamic_index_in_dim(qg, column, axis=2, keepdims=False)  # [b, R, h, d]
    a_full = softmax(logits(q_col, kg, "brhd,brkhd->brhk"), valid[None, :, None, :])
    r_full = jnp.einsum("brhk,brkhd->brhd", a_full, vg)                     # [b, R, h, d]
    # R_causal[i, j]: row i up to column j.
    q0 = q[:, 0]
    k_row = jax.lax.dynamic_index_in_dim(kg, row, axis=1, keepdims=False)   # [b, C, h, d]
    v_row = jax.lax.dynamic_index_in_dim(vg, row, axis=1, keepdims=False)
    a_row = softmax(logits(q0, k_row, "bhd,bkhd->bhk"), (jnp.arange(cols) <= column)[None, None])
    r_causal = jnp.einsum("bhk,bkhd->bhd", a_row, v_row)
    # Column j over rows i' <= i: earlier rows through R_full, row i through R_causal.
    k_col = jax.lax.dynamic_index_in_dim(kg, column, axis=2, keepdims=False)  # [b, R, h, d]
    a_col = softmax(logits(q0, k_col, "bhd,brhd->bhr"), (jnp.arange(rows) <= row)[None, None])
    strict = (jnp.arange(rows) < row)[None, None]
    above = jnp.einsum("bhr,brhd->bhd", jnp.where(strict, a_col, 0.0), r_full)
    diagonal = jax.lax.dynamic_index_in_dim(a_col, row, axis=2, keepdims=False)  # [b, h]
    out = above + diagonal[..., None] * r_causal
    return out[:, None].astype(q.dtype)
