"""Exact softmax attention in linear memory: blocked queries and keys with an online softmax.

Rabe & Staats 2021 ("Self-attention does not need O(n^2) memory") and the FlashAttention
recurrence (Dao et al. 2022, Alg. 1 forward, Alg. 2/4 backward). The forward pass keeps, per
query block, a running max m, running normaliser l and running output; it saves only the
output and the log-sum-exp L = m + log l. The backward pass recomputes each block's
probabilities P = exp(S - L) and uses D = rowsum(dO * O) (FlashAttention-2 eq. for dS), so no
`[L, L]` array exists in either direction. Attention-weight dropout is supported: each
(query block, key block) pair draws its mask from a key folded from the block indices, so the
backward pass regenerates exactly the forward pass's masks.

Not a registered variant: `transformer` uses it with `attention_kwargs={"implementation":
"blocked"}`.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from einops import rearrange

from models.attention import masks


def _blocks(x, size):
  """`[b, l, h, d]` -> `[n, b, size, h, d]` (l padded up to a multiple of size)."""
  pad = (-x.shape[1]) % size
  if pad:
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  return rearrange(x, "b (n s) ... -> n b s ...", s=size)


def _bias(kv_valid, q_pos, k_pos, causal, dtype):
  """Additive bias `[b, 1, sq, sk]` for one (query block, key block) pair."""
  allowed = kv_valid[:, None, None, :]
  if causal:
    allowed = allowed & (k_pos[None, None, None, :] <= q_pos[None, None, :, None])
  return jnp.where(allowed, 0.0, masks.big_negative(dtype)).astype(dtype)


def _keep(rng, qi, ki, shape, rate, dtype):
  """Scaled keep mask (0 or 1 / (1 - rate)) of one block pair, in the scores' dtype."""
  key = jax.random.fold_in(jax.random.fold_in(rng, qi), ki)
  return (masks.dropout_keep(key, rate, shape) / (1.0 - rate)).astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _attention(q, k, v, kv_valid, causal, block_q, block_k, dropout_rate, rng):
  return _forward(q, k, v, kv_valid, causal, block_q, block_k, dropout_rate, rng)[0]


def _forward(q, k, v, kv_valid, causal, block_q, block_k, dropout_rate, rng):
  b, lq, h, d = q.shape
  lk = k.shape[1]
  scale = 1.0 / jnp.sqrt(jnp.asarray(d, q.dtype))
  qb, kb, vb = _blocks(q * scale, block_q), _blocks(k, block_k), _blocks(v, block_k)
  valid = _blocks(kv_valid[..., None, None], block_k)[..., 0, 0]  # [nk, b, sk]
  offset = lk - lq  # causal queries are aligned to the keys' end

  def one_query_block(args):
    qi, q_blk = args
    q_pos = qi * block_q + jnp.arange(block_q) + offset

    def step(carry, inputs):
      m, l, acc = carry
      ki, k_blk, v_blk, valid_blk = inputs
      k_pos = ki * block_k + jnp.arange(block_k)
      s = jnp.einsum("bqhd,bkhd->bhqk", q_blk, k_blk)
      s = s + _bias(valid_blk, q_pos, k_pos, causal, s.dtype)
      m_new = jnp.maximum(m, s.max(-1))
      p = jnp.exp(s - m_new[..., None])
      correction = jnp.exp(m - m_new)
      l = l * correction + p.sum(-1)
      if dropout_rate > 0.0:
        p = p * _keep(rng, qi, ki, p.shape, dropout_rate, p.dtype)
      acc = acc * correction[..., None] + jnp.einsum("bhqk,bkhd->bhqd", p, v_blk)
      return (m_new, l, acc), None

    init = (jnp.full((b, h, block_q), -jnp.inf, q.dtype), jnp.zeros((b, h, block_q), q.dtype),
            jnp.zeros((b, h, block_q, d), q.dtype))
    (m, l, acc), _ = jax.lax.scan(step, init, (jnp.arange(kb.shape[0]), kb, vb, valid))
    out = acc / l[..., None]
    return rearrange(out, "b h q d -> b q h d"), m + jnp.log(l)

  out, lse = jax.lax.map(one_query_block, (jnp.arange(qb.shape[0]), qb))
  out = rearrange(out, "n b s h d -> b (n s) h d")[:, :lq]
  return out, (q, k, v, kv_valid, out, lse, rng)


def _backward(causal, block_q, block_k, dropout_rate, residuals, d_out):
  q, k, v, kv_valid, out, lse, rng = residuals
  lq, lk, d = q.shape[1], k.shape[1], q.shape[-1]
  scale = 1.0 / jnp.sqrt(jnp.asarray(d, q.dtype))
  delta = jnp.einsum("bqhd,bqhd->bhq", d_out, out)  # D = rowsum(dO * O)
  qb, dob = _blocks(q * scale, block_q), _blocks(d_out, block_q)
  lse_b = lse                                          # [nq, b, h, sq]
  delta_b = rearrange(_blocks(rearrange(delta, "b h q -> b q h"), block_q), "n b s h -> n b h s")
  kb, vb = _blocks(k, block_k), _blocks(v, block_k)
  valid = _blocks(kv_valid[..., None, None], block_k)[..., 0, 0]
  offset = lk - lq

  def probs(qi, ki, q_blk, k_blk, valid_blk, lse_blk):
    q_pos = qi * block_q + jnp.arange(block_q) + offset
    k_pos = ki * block_k + jnp.arange(block_k)
    s = jnp.einsum("bqhd,bkhd->bhqk", q_blk, k_blk)
    s = s + _bias(valid_blk, q_pos, k_pos, causal, s.dtype)
    return jnp.exp(s - lse_blk[..., None])

  def grads_of_scores(p, qi, ki, do_blk, v_blk, delta_blk):
    dp = jnp.einsum("bqhd,bkhd->bhqk", do_blk, v_blk)
    if dropout_rate > 0.0:
      keep = _keep(rng, qi, ki, p.shape, dropout_rate, p.dtype)
      return p * (dp * keep - delta_blk[..., None]), p * keep
    return p * (dp - delta_blk[..., None]), p

  def dq_block(args):  # for one query block, sum over key blocks
    qi, q_blk, do_blk, lse_blk, delta_blk = args

    def step(dq, inputs):
      ki, k_blk, v_blk, valid_blk = inputs
      p = probs(qi, ki, q_blk, k_blk, valid_blk, lse_blk)
      ds, _ = grads_of_scores(p, qi, ki, do_blk, v_blk, delta_blk)
      return dq + jnp.einsum("bhqk,bkhd->bqhd", ds, k_blk), None

    dq, _ = jax.lax.scan(step, jnp.zeros_like(q_blk), (jnp.arange(kb.shape[0]), kb, vb, valid))
    return dq * scale

  def dkv_block(args):  # for one key block, sum over query blocks
    ki, k_blk, v_blk, valid_blk = args

    def step(carry, inputs):
      dk, dv = carry
      qi, q_blk, do_blk, lse_blk, delta_blk = inputs
      p = probs(qi, ki, q_blk, k_blk, valid_blk, lse_blk)
      ds, p_dropped = grads_of_scores(p, qi, ki, do_blk, v_blk, delta_blk)
      dv = dv + jnp.einsum("bhqk,bqhd->bkhd", p_dropped, do_blk)
      dk = dk + jnp.einsum("bhqk,bqhd->bkhd", ds, q_blk)  # q_blk already carries the scale
      return (dk, dv), None

    (dk, dv), _ = jax.lax.scan(step, (jnp.zeros_like(k_blk), jnp.zeros_like(v_blk)),
                               (jnp.arange(qb.shape[0]), qb, dob, lse_b, delta_b))
    return dk, dv

  dq = jax.lax.map(dq_block, (jnp.arange(qb.shape[0]), qb, dob, lse_b, delta_b))
  dk, dv = jax.lax.map(dkv_block, (jnp.arange(kb.shape[0]), kb, vb, valid))
  unblock = lambda x, n: rearrange(x, "n b s h d -> b (n s) h d")[:, :n]
  return unblock(dq, lq), unblock(dk, lk), unblock(dv, lk), None, None


_attention.defvjp(_forward, _backward)


def blocked_softmax_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False,
                              block_q=512, block_k=512, dropout_rate=0.0, dropout_rng=None,
                              deterministic=True):
  """Exact attention, same contract as `softmax_attention`, O(L * block) memory."""
  b, lq = q.shape[:2]
  lk = k.shape[1]
  block_q, block_k = min(block_q, lq), min(block_k, lk)
  kv_valid = jnp.ones((b, lk), bool) if kv_mask is None else kv_mask
  rate = 0.0 if deterministic else float(dropout_rate)
  rng = dropout_rng if rate > 0.0 else jax.random.key(0)
  out_dtype = v.dtype
  # float32 inside, whatever the model's dtype (bfloat16): the running max, normaliser and
  # output are rescaled and summed over every key block, too long a chain for bfloat16.
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  out = _attention(q, k, v, kv_valid, causal, block_q, block_k, rate, rng)
  return masks.zero_padded_queries(out.astype(out_dtype), q_mask)
