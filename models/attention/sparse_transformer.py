"""Sparse Transformer attention (Child et al. 2019, "Generating Long Sequences with Sparse
Transformers"), the factorised patterns of sec. 4.2 with stride / block length l:

  strided:  A(1)_i = {t, ..., i}, t = max(0, i - l)        A(2)_i = {j : (i - j) mod l = 0}
  fixed:    A(1)_i = {j : floor(j / l) = floor(i / l)}     A(2)_i = {j : j mod l in {l-c..l-1}}

both intersected with j <= i in the causal (paper) form. The bidirectional form (not in the
paper) makes each set symmetric: strided A(1) = {|i - j| <= l} and A(2) the same residues in
both directions; fixed A(1) the whole block and A(2) the summary columns of every block.
Sec. 4.3 combines the parts; inside one mixer we offer
  factorisation="merged": one softmax over A(1) u A(2) per head (LRA's default, fixed pattern);
  factorisation="heads":  the first ceil(h/2) heads attend over A(1), the others over A(2).
Block-wise: A(1) is a block-local band (own block, plus neighbours for strided); A(2) gathers
the summary columns (fixed, `[b, n*c]` keys shared by all queries) or the keys with the same
offset inside their block (strided, one key per block). Scores are O(L*l + L*L/l*c) (fixed)
or O(L*l + L*L/l) (strided): quadratic for a fixed l, O(L*sqrt(L)) when l grows like sqrt(L)
as in the paper (its stride l is "chosen to be close to sqrt(n)"; abstract: O(n sqrt(n))).
So `block_size=0` (the default) picks l from the length (`auto_block_size`); a fixed
`block_size` is honoured as given (and is then quadratic in L, as the LRA code's l = 50 was).
A query with an empty set (e.g. the A(2) heads before the first summary) outputs zero.

Incremental decoding (`decode=True`, registry kind "kv"): A(2) reaches back to the start
(every block's summary columns, fixed; every l-th key, strided), so the cache keeps every
key/value `[b, L, kv_heads, d]`; each step applies query i's row of the causal pattern (per head
with factorisation="heads"), l taken from the init call's length L as the full forward's.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from models.attention import blocking, decoding, kv_cache, masks
from models.attention.registry import register

PATTERNS = ("fixed", "strided")
FACTORISATIONS = ("merged", "heads")


def auto_block_size(length: int, pattern: str = "fixed", summary_size: int = 8) -> int:
  """l for `block_size=0`: the power of two nearest sqrt(length) (in log scale, halves rounded
  up: 2^floor(log2(L)/2 + 1/2)), so the scores grow as O(L*sqrt(L)) as in the paper;
  for the fixed pattern at least `summary_size` (c <= l), which matters below length 64."""
  if length < 1:
    raise ValueError(f"sparse_transformer: sequence length {length}; expected >= 1")
  block = 2 ** math.floor(math.log2(length) / 2 + 0.5)
  return max(block, summary_size) if pattern == "fixed" else block


def _check(pattern, factorisation, block_size, summary_size, heads):
  if pattern not in PATTERNS:
    raise ValueError(f"sparse_transformer: pattern={pattern!r}; expected one of {PATTERNS}")
  if factorisation not in FACTORISATIONS:
    raise ValueError(f"sparse_transformer: factorisation={factorisation!r}; "
                     f"expected one of {FACTORISATIONS}")
  if block_size < 1:
    raise ValueError(f"sparse_transformer: block_size={block_size}; expected >= 1 "
                     "(or 0: the power of two nearest sqrt(length))")
  if pattern == "fixed" and not 1 <= summary_size <= block_size:
    raise ValueError(f"sparse_transformer: summary_size={summary_size}; expected 1 <= c <= "
                     f"block_size={block_size}")
  if factorisation == "heads" and heads < 2:
    raise ValueError("sparse_transformer: factorisation='heads' needs at least 2 heads")


def sparse_transformer_attention(q, k, v, *, pattern="fixed", block_size=0, summary_size=8,
                                 factorisation="merged", causal=False, q_mask=None,
                                 kv_mask=None, dropout_rate=0.0, dropout_rng=None,
                                 deterministic=True):
  """Pure function. q/k/v `[b, l, h, d]` (self-attention), masks bool `[b, l]`."""
  blocking.check_self_attention(q, k, "sparse_transformer")
  batch, length, heads, depth = q.shape
  if block_size == 0:
    block_size = auto_block_size(length, pattern, summary_size)
  _check(pattern, factorisation, block_size, summary_size, heads)
  stride, merged = block_size, factorisation == "merged"
  q = q / jnp.sqrt(depth).astype(q.dtype)
  qb, kb, vb = (blocking.to_blocks(blocking.pad_to_blocks(t, stride), stride) for t in (q, k, v))
  n = qb.shape[1]
  valid = blocking.to_blocks(blocking.key_validity(kv_mask, batch, length, stride), stride)
  q_pos = blocking.block_positions(n, stride)  # [1, n, l]
  if merged:
    head_1 = head_2 = jnp.ones((1, 1, heads, 1, 1), bool)
  else:  # sec. 4.3: different heads attend to different parts of the factorisation
    head_1 = (jnp.arange(heads) < heads - heads // 2)[None, None, :, None, None]
    head_2 = ~head_1

  # Part A(1): the own block (fixed) or the band of width l (strided), from neighbour blocks.
  if pattern == "fixed":
    offsets = (0,)
  else:
    offsets = (-1, 0) if causal else (-1, 0, 1)
  k_1, v_1 = (blocking.neighbour_blocks(t, offsets) for t in (kb, vb))
  k_pos = blocking.neighbour_blocks(q_pos, offsets, fill=-1)  # [1, n, K]
  k_valid = blocking.neighbour_blocks(valid, offsets, fill=False)  # [b, n, K]
  delta = q_pos[:, :, :, None] - k_pos[:, :, None, :]  # i - j, [1, n, l, K]
  in_1 = k_pos[:, :, None, :] >= 0
  if pattern == "strided":
    in_1 = in_1 & (jnp.abs(delta) <= stride)  # t = max(0, i - l) ... i (and mirrored)
  if causal:
    in_1 = in_1 & (delta >= 0)
  allowed_1 = in_1[:, :, None] & k_valid[:, :, None, None, :] & head_1
  logits_1 = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, k_1)

  block_m = jnp.arange(n)[:, None]  # query block
  if pattern == "fixed":
    # Part A(2): the last c columns of every block, gathered once and shared by all queries.
    c = summary_size
    k_2, v_2 = (t[:, :, stride - c:].reshape(batch, n * c, heads, depth) for t in (kb, vb))
    s_valid = valid[:, :, stride - c:].reshape(batch, n * c)
    s_pos = (jnp.arange(n)[:, None] * stride + jnp.arange(stride - c, stride)).reshape(-1)
    in_2 = jnp.ones((1, n, stride, n * c), bool)
    if causal:
      in_2 = in_2 & (s_pos[None, None, None, :] <= q_pos[:, :, :, None])
    if merged:  # the own block's summary is already in A(1)
      in_2 = in_2 & (s_pos // stride != block_m)[None, :, None, :]
    allowed_2 = in_2[:, :, None] & s_valid[:, None, None, None, :] & head_2
    logits_2 = jnp.einsum("bnqhd,bkhd->bnhqk", qb, k_2)
  else:
    # Part A(2): j = p*l + s for query i = m*l + s: the same offset s in every block p.
    block_p = jnp.arange(n)[None, :]
    in_2 = jnp.ones((n, n), bool)
    if causal:
      in_2 = in_2 & (block_p <= block_m)
    if merged:  # j = i and j = i -/+ l are already in A(1)
      in_2 = in_2 & (jnp.abs(block_p - block_m) >= 2)
    # valid[b, p, s] -> [b, 1, 1, s, p]
    allowed_2 = (in_2[None, :, None, None, :] & jnp.swapaxes(valid, 1, 2)[:, None, None]
                 & head_2)
    logits_2 = jnp.einsum("bmshd,bpshd->bmhsp", qb, kb)

  weights = blocking.joint_softmax([logits_1, logits_2], [allowed_1, allowed_2])
  w_1, w_2 = blocking.dropout(weights, dropout_rate, dropout_rng, deterministic)
  out = jnp.einsum("bnhqk,bnkhd->bnqhd", w_1, v_1)
  if pattern == "fixed":
    out = out + jnp.einsum("bnhqk,bkhd->bnqhd", w_2, v_2)
  else:
    out = out + jnp.einsum("bmhsp,bpshd->bmshd", w_2, vb)
  out = blocking.from_blocks(out)[:, :length]
  return masks.zero_padded_queries(out, q_mask)


@register("sparse_transformer", causal=True, cross=False, decode="kv")
class SparseTransformerAttention(nn.Module):
  """Merged fixed pattern (LRA's default pattern, the paper's for Enwik8) with c = 8 summary
  columns (the paper's c in {8, 16, 32}) and l = the power of two nearest sqrt(L)
  (`block_size=0`; the paper takes l close to sqrt(n), so the scores are O(L*sqrt(L)): 32 at 1024,
  64 at 4096, 128 at 16384). LRA's code used l = 50, c = 10 for every task
  (`utils/train_utils.get_model`: Fixed1Pattern/Fixed2Pattern), as causal masks on a dense
  matrix even in the encoder; computed sparsely, a fixed l scores L*(l + c*L/l) pairs and grows
  quadratically (`block_size=50, summary_size=10` gives LRA's sizes, still bidirectional)."""
  pattern: str = "fixed"
  block_size: int = 0     # l (stride or block length); 0: the power of two nearest sqrt(L)
  summary_size: int = 8   # c: summary columns per block (fixed pattern only)
  factorisation: str = "merged"
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
    return sparse_transformer_attention(
        q, k, v, pattern=self.pattern, block_size=self.block_size,
        summary_size=self.summary_size, factorisation=self.factorisation, causal=self.causal,
        q_mask=q_mask, kv_mask=kv_mask, dropout_rate=self.dropout_rate, dropout_rng=rng,
        deterministic=deterministic)

  def _decode(self, q, keys, values, index):
    """Token at position `index`: its row of the causal pattern (sec. 4.2) over the cache."""
    decoding.check_one_token(q, "sparse_transformer")
    length, heads = keys.shape[1], q.shape[2]
    block = self.block_size or auto_block_size(length, self.pattern, self.summary_size)
    _check(self.pattern, self.factorisation, block, self.summary_size, heads)
    j = jnp.arange(length)
    seen = j <= index
    if self.pattern == "fixed":
      part_1 = j // block == index // block
      part_2 = j % block >= block - self.summary_size
    else:
      part_1 = index - j <= block
      part_2 = (index - j) % block == 0
    part_1, part_2 = part_1 & seen, part_2 & seen
    if self.factorisation == "merged":  # one softmax over A(1) u A(2)
      allowed = (part_1 | part_2)[None, None]
    else:  # sec. 4.3: the first ceil(h/2) heads over A(1), the others over A(2)
      head_1 = (jnp.arange(heads) < heads - heads // 2)[:, None]
      allowed = jnp.where(head_1, part_1, part_2)[None]
    return kv_cache.attend_one(q, keys, values, allowed, float32_softmax=False)
