"""Sparse Sinkhorn Attention (Tay, Bahri, Yang, Metzler and Juan 2020, sec. 3).

The sequence is cut into `nb` blocks of `block_size`. A sorting network (SortNet, sec. 3.2:
a two-layer ReLU MLP on each block's summed keys, shared by the heads) gives block-to-block
logits R `[nb, nb]`; Sinkhorn balancing in log space (sec. 3.3: S^0 = R / temperature,
S^k = F_c(F_r(S^{k-1})), F_r / F_c row / column normalisation, `sinkhorn_iters` times;
optional Gumbel noise at training time) turns R into a (near) doubly stochastic P. The keys and
values of slot i are the soft-sorted blocks sum_j P_ij K_j (sec. 3.1), and every query block
attends to its sorted block plus its own local block (sec. 3.1, "local + sorted"), one softmax.

Causal form (sec. 3.4): the SortNet sees only the first key of each block (visible to every
query of that block); P_ij is masked to past blocks j < i; the column normalisation of row i
only sums rows <= i ("causal Sinkhorn balancing", so a later block's logits never change an
earlier row); the local block is causally masked.

Padded keys are zeroed before sorting; a sorted slot's logit gets log(share of its mass that
comes from real tokens), which is 0 without padding and masks all-padding slots.
Memory is O(L * block_size + nb^2); no [L, L] array. Defaults: block_size 50 (the LRA
repository's), temperature 0.75, sinkhorn_iters 5.

Incremental decoding (`decode=True`, registry kind "kv"): causally, block i's row of R comes
from block i's first key alone, causal balancing makes row i of P depend on rows <= i only,
and P_ij is zero unless j < i, so a token's sorted block needs only whole past blocks: the
cache keeps every key/value `[b, L, kv_heads, d]` and each step reruns the (nb x nb) balancing
on the cached first keys (rows of blocks not begun yet are computed from zeros but cannot
reach row i) and attends to row i's sorted block plus its own block up to the token.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, kv_cache, masks
from models.attention.registry import register

_MASKED = -1e9  # log-space stand-in for "not allowed" inside the Sinkhorn iterations


def sinkhorn(log_alpha, *, iters: int, temperature: float = 1.0, causal: bool = False):
  """Log-space Sinkhorn balancing of `[..., n, n]` logits; returns log P.

  Non-causal: alternately normalises rows and columns (sec. 3.3). Causal: only j < i is
  allowed, and column sums run over rows <= i (cumulative logsumexp), sec. 3.4.
  """
  n = log_alpha.shape[-1]
  allowed = None
  if causal:
    allowed = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]
  keep = (lambda x: x) if allowed is None else (lambda x: jnp.where(allowed, x, _MASKED))

  def step(_, log_p):
    log_p = keep(log_p - jax.nn.logsumexp(log_p, axis=-1, keepdims=True))   # F_r
    if causal:
      return keep(log_p - jax.lax.cumlogsumexp(log_p, axis=log_p.ndim - 2))  # causal F_c
    return log_p - jax.nn.logsumexp(log_p, axis=-2, keepdims=True)          # F_c

  return jax.lax.fori_loop(0, iters, step, keep(log_alpha / temperature))


def sinkhorn_attention(q, k, v, sort_logits, *, q_mask=None, kv_mask=None, block_size=50,
                       sinkhorn_iters=5, temperature=0.75, causal=False, dropout_rate=0.0,
                       dropout_rng=None, deterministic=True):
  """Pure function. q/k/v `[b, l, h, d]`, sort_logits `[b, h, nb, nb]` (row = target slot)."""
  batch, length, heads, depth = q.shape
  nb = -(-length // block_size)
  extra = nb * block_size - length
  pad = lambda x: jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))
  blocks = lambda x: pad(x).reshape((batch, nb, block_size) + x.shape[2:])
  if kv_mask is None:
    kv_mask = jnp.ones((batch, length), bool)
  valid = blocks(kv_mask.astype(bool))                                   # [b, n, s]
  qb = blocks(q)
  kb = jnp.where(valid[..., None, None], blocks(k), 0.0)
  vb = jnp.where(valid[..., None, None], blocks(v), 0.0)

  p = jnp.exp(sinkhorn(sort_logits, iters=sinkhorn_iters, temperature=temperature,
                       causal=causal))                                    # [b, h, n, n]
  sorted_k = jnp.einsum("bhij,bjshd->bishd", p, kb)                       # sec. 3.1: P K
  sorted_v = jnp.einsum("bhij,bjshd->bishd", p, vb)
  real_mass = jnp.einsum("bhij,bjs->bhis", p, valid.astype(p.dtype))
  total_mass = p.sum(axis=-1)[..., None]
  share = jnp.where(total_mass > 0, real_mass / jnp.where(total_mass > 0, total_mass, 1.0), 0.0)
  neg = masks.big_negative(q.dtype)
  sorted_bias = jnp.where(share > 0, jnp.log(jnp.where(share > 0, share, 1.0)), neg)

  scale = jnp.sqrt(depth).astype(q.dtype)
  sorted_logits = jnp.einsum("bnqhd,bnkhd->bhnqk", qb, sorted_k) / scale
  sorted_logits = sorted_logits + sorted_bias[:, :, :, None, :]
  local_logits = jnp.einsum("bnqhd,bnkhd->bhnqk", qb, kb) / scale
  local_allowed = valid[:, None, :, None, :]
  if causal:
    local_allowed = local_allowed & jnp.tril(jnp.ones((block_size, block_size), bool))
  local_logits = jnp.where(local_allowed, local_logits, neg)
  weights = jax.nn.softmax(jnp.concatenate([sorted_logits, local_logits], axis=-1), axis=-1)
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  out = (jnp.einsum("bhnqk,bnkhd->bnqhd", weights[..., :block_size], sorted_v)
         + jnp.einsum("bhnqk,bnkhd->bnqhd", weights[..., block_size:], vb))
  out = out.reshape(batch, nb * block_size, heads, depth)[:, :length]
  return masks.zero_padded_queries(out, q_mask)


def block_summaries(k, kv_mask, block_size: int, causal: bool):
  """SortNet input `[b, nb, h, d]`: the sum of each block's real keys (sec. 3.2), or in the
  causal form the block's first key (sec. 3.4)."""
  batch, length = k.shape[:2]
  nb = -(-length // block_size)
  if kv_mask is None:
    kv_mask = jnp.ones((batch, length), bool)
  k = jnp.where(kv_mask[..., None, None], k, 0.0)
  k = jnp.pad(k, [(0, 0), (0, nb * block_size - length), (0, 0), (0, 0)])
  kb = k.reshape((batch, nb, block_size) + k.shape[2:])
  return kb[:, :, 0] if causal else kb.sum(axis=2)


@register("sinkhorn", causal=True, cross=False, needs_max_len=True, decode="kv")
class SinkhornAttention(nn.Module):
  """SortNet parameters + Gumbel noise rng; the maths is `sinkhorn_attention`."""
  block_size: int = 50
  sinkhorn_iters: int = 5
  temperature: float = 0.75
  gumbel_noise: bool = False  # Gumbel-Sinkhorn sampling at training time (sec. 3.3)
  causal: bool = False
  dropout_rate: float = 0.0
  kv_max_len: int | None = None

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if decode:
      stepping, index, cache, k, v = kv_cache.decode_full_cache(self, q, k, v)
      if stepping:
        return self._decode(q, *cache, index)
    if q.shape[1] != k.shape[1]:
      raise ValueError("attention 'sinkhorn' is self-attention only: query length "
                       f"{q.shape[1]} != key length {k.shape[1]}")
    if self.block_size < 1 or self.sinkhorn_iters < 0 or self.temperature <= 0:
      raise ValueError("config.model.attention_kwargs for 'sinkhorn' need block_size >= 1, "
                       f"sinkhorn_iters >= 0, temperature > 0; got {self.block_size}, "
                       f"{self.sinkhorn_iters}, {self.temperature}")
    max_len = self.kv_max_len or k.shape[1]
    if k.shape[1] > max_len:
      raise ValueError(f"sinkhorn: key length {k.shape[1]} exceeds max_len {max_len}")
    logits = self._sort_logits(q, k, kv_mask)                              # [b, h, n, n]
    if self.gumbel_noise and not deterministic:
      # Drawn flat: the same noise, compiled much faster on CPU (see masks.dropout_keep).
      noise = jax.random.gumbel(self.make_rng("dropout"), (math.prod(logits.shape),),
                                logits.dtype)
      logits = logits + noise.reshape(logits.shape)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return sinkhorn_attention(q, k, v, logits, q_mask=q_mask, kv_mask=kv_mask,
                              block_size=self.block_size, sinkhorn_iters=self.sinkhorn_iters,
                              temperature=self.temperature, causal=self.causal,
                              dropout_rate=self.dropout_rate, dropout_rng=rng,
                              deterministic=deterministic)

  def _sort_logits(self, q, k, kv_mask):
    """SortNet (sec. 3.2): block-to-block logits R `[b, h, nb, nb]` (row = target slot)."""
    max_len = self.kv_max_len or k.shape[1]
    max_blocks = -(-max_len // self.block_size)
    nb = -(-k.shape[1] // self.block_size)
    summary = block_summaries(k, kv_mask, self.block_size, self.causal)  # [b, n, h, d]
    hidden = nn.relu(nn.Dense(k.shape[-1], dtype=q.dtype, name="sortnet_hidden")(summary))
    logits = nn.Dense(max_blocks, dtype=q.dtype, name="sortnet_out")(hidden)[..., :nb]
    return logits.transpose(0, 2, 1, 3)

  def _decode(self, q, keys, values, index):
    """Token at position `index` (block i, offset s): row i of the causal P over the cached
    past blocks (the sorted block) and its own block up to s, one softmax (sec. 3.1, 3.4)."""
    decoding.check_one_token(q, "sinkhorn")
    batch, _, heads, depth = q.shape
    length, size = keys.shape[1], self.block_size
    nb = -(-length // size)
    k_all, v_all = decoding.repeat_kv(keys, heads), decoding.repeat_kv(values, heads)
    logits = self._sort_logits(q, k_all, None)
    log_p = sinkhorn(logits, iters=self.sinkhorn_iters, temperature=self.temperature,
                     causal=True)
    block, offset = index // size, index % size
    p = jnp.exp(jax.lax.dynamic_index_in_dim(log_p, block, axis=2, keepdims=False))  # [b,h,n]
    pad = lambda x: jnp.pad(x, [(0, 0), (0, nb * size - length)] + [(0, 0)] * (x.ndim - 2))
    kb, vb = (pad(t).reshape((batch, nb, size, heads, depth)) for t in (k_all, v_all))
    valid = (jnp.arange(nb * size) < length).reshape(nb, size)
    sorted_k = jnp.einsum("bhj,bjshd->bshd", p, kb)
    sorted_v = jnp.einsum("bhj,bjshd->bshd", p, vb)
    real_mass = jnp.einsum("bhj,js->bhs", p, valid.astype(p.dtype))
    total_mass = p.sum(axis=-1)[..., None]
    share = jnp.where(total_mass > 0, real_mass / jnp.where(total_mass > 0, total_mass, 1.0), 0.)
    neg = masks.big_negative(q.dtype)
    sorted_bias = jnp.where(share > 0, jnp.log(jnp.where(share > 0, share, 1.0)), neg)
    scale = jnp.sqrt(depth).astype(q.dtype)
    q0 = q[:, 0]
    local_k = jax.lax.dynamic_index_in_dim(kb, block, axis=1, keepdims=False)  # [b, s, h, d]
    local_v = jax.lax.dynamic_index_in_dim(vb, block, axis=1, keepdims=False)
    sorted_logits = jnp.einsum("bhd,bshd->bhs", q0, sorted_k) / scale + sorted_bias
    local_allowed = jax.lax.dynamic_index_in_dim(valid, block, axis=0, keepdims=False) & (
        jnp.arange(size) <= offset)
    local_logits = jnp.where(local_allowed, jnp.einsum("bhd,bshd->bhs", q0, local_k) / scale,
                             neg)
    weights = jax.nn.softmax(jnp.concatenate([sorted_logits, local_logits], axis=-1), axis=-1)
    out = (jnp.einsum("bhs,bshd->bhd", weights[..., :size], sorted_v)
           + jnp.einsum("bhs,bshd->bhd", weights[..., size:], local_v))
    return out[:, None]
