"""Exact softmax attention in linear memory: blocked queries and keys with an online softmax.

Rabe & Staats 2021 ("Self-attention does not need O(n^2) memory") and the FlashAttention
recurrence (Dao et al. 2022, Alg. 1 forward, Alg. 2/4 backward). The forward pass keeps, per
query block, a running max m, running normaliser l and running output; it saves only the
output and the log-sum-exp L = m + log l. The backward pass recomputes each block's
probabilities P = exp(S - L) and uses D = rowsum(dO * O) (FlashAttention-2 eq. for dS), so no
`[L, L]` array exists in either direction: memory is O(block_q * block_k) per step. With
causal masking, key blocks wholly in a query block's future are skipped (`lax.cond`), so the
causal form does about half the work. Attention-weight dropout is supported: each
(query block, key block) pair draws its mask from a key folded from the block indices, so the
backward pass regenerates exactly the forward pass's masks.

An additive score bias `fn(q_pos, k_pos) -> [h, sq, sk]` (ALiBi, T5) is evaluated per block
pair in both passes. Its closed-over arrays (T5's table) are made explicit arguments of the
custom VJP (`jax.closure_convert`) and the backward pass returns their gradients: the bias
block's cotangent is dS summed over the batch, pulled back through `fn` block by block.

Not a registered variant: `transformer` uses it with `attention_kwargs={"implementation":
"blocked"}`, and with "auto" (its default) at long lengths on a CPU.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from models.attention import masks


def _blocks(x, size, axis=2):
  """Cuts `axis` into blocks of `size` (padded up): `[b, h, l, ...]` -> `[n, b, h, size, ...]`."""
  pad = (-x.shape[axis]) % size
  if pad:
    x = jnp.pad(x, [(0, pad) if i == axis else (0, 0) for i in range(x.ndim)])
  x = x.reshape(x.shape[:axis] + (-1, size) + x.shape[axis + 1:])
  return jnp.moveaxis(x, axis, 0)


def _unblock(x, length):
  """`[n, b, h, size, d]` -> `[b, h, length, d]`."""
  n, b, h, size, d = x.shape
  return jnp.moveaxis(x, 0, 2).reshape(b, h, n * size, d)[:, :, :length]


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


def _visible(causal, qi, ki, block_q, block_k, offset):
  """False when every key of block ki is in the future of every query of block qi."""
  if not causal:
    return True
  return ki * block_k <= qi * block_q + block_q - 1 + offset


def _when(visible, compute, skip, *args):
  """compute(*args) for a visible block pair, else skip(*args) without computing (lax.cond)."""
  if visible is True:
    return compute(*args)
  return jax.lax.cond(visible, compute, skip, *args)


def _add_score_bias(s, bias_fn, consts, q_pos, k_pos):
  """Scores `[b, h, sq, sk]` plus the score bias of this block pair (if there is one)."""
  if bias_fn is None:
    return s
  return s + bias_fn(q_pos, k_pos, *consts)[None].astype(s.dtype)


def _float0_or_zero(x):
  """The zero cotangent of a primal: float0 for integer / bool arrays."""
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, jax.dtypes.float0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _attention(q, k, v, kv_valid, causal, block_q, block_k, dropout_rate, bias_fn, rng,
               bias_consts):
  return _forward(q, k, v, kv_valid, causal, block_q, block_k, dropout_rate, bias_fn, rng,
                  bias_consts)[0]


def _forward(q, k, v, kv_valid, causal, block_q, block_k, dropout_rate, bias_fn, rng,
             bias_consts):
  """q `[b, h, lq, d]`, k/v `[b, h, lk, d]` -> out `[b, h, lq, d]` and the residuals.

  `bias_fn(q_pos, k_pos, *bias_consts)`: the score bias (closure-converted), or None."""
  b, h, lq, d = q.shape
  lk = k.shape[2]
  scale = 1.0 / jnp.sqrt(jnp.asarray(d, q.dtype))
  qb, kb, vb = _blocks(q * scale, block_q), _blocks(k, block_k), _blocks(v, block_k)
  valid = _blocks(kv_valid, block_k, axis=1)  # [nk, b, sk]; padded keys are invalid
  offset = lk - lq  # causal queries are aligned to the keys' end

  def one_query_block(args):
    qi, q_blk = args
    q_pos = qi * block_q + jnp.arange(block_q) + offset
    bias_q_pos = q_pos if causal else q_pos - offset  # non-causal: the queries' own positions

    def step(carry, inputs):
      ki, k_blk, v_blk, valid_blk = inputs

      def compute(carry):
        m, l, acc = carry
        k_pos = ki * block_k + jnp.arange(block_k)
        s = jnp.einsum("bhqd,bhkd->bhqk", q_blk, k_blk)
        s = _add_score_bias(s, bias_fn, bias_consts, bias_q_pos, k_pos)
        s = s + _bias(valid_blk, q_pos, k_pos, causal, s.dtype)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.exp(s - m_new[..., None])
        correction = jnp.exp(m - m_new)
        l = l * correction + p.sum(-1)
        if dropout_rate > 0.0:
          p = p * _keep(rng, qi, ki, p.shape, dropout_rate, p.dtype)
        acc = acc * correction[..., None] + jnp.einsum("bhqk,bhkd->bhqd", p, v_blk)
        return m_new, l, acc

      visible = _visible(causal, qi, ki, block_q, block_k, offset)
      return _when(visible, compute, lambda carry: carry, carry), None

    init = (jnp.full((b, h, block_q), -jnp.inf, q.dtype), jnp.zeros((b, h, block_q), q.dtype),
            jnp.zeros((b, h, block_q, d), q.dtype))
    (m, l, acc), _ = jax.lax.scan(step, init, (jnp.arange(kb.shape[0]), kb, vb, valid))
    return acc / l[..., None], m + jnp.log(l)

  out, lse = jax.lax.map(one_query_block, (jnp.arange(qb.shape[0]), qb))
  out = _unblock(out, lq)
  return out, (q, k, v, kv_valid, out, lse, rng, bias_consts)


def _backward(causal, block_q, block_k, dropout_rate, bias_fn, residuals, d_out):
  """One pass over (query block, key block) pairs: FlashAttention-2's backward (Dao 2023,
  Alg. 2), recomputing P = exp(S - L) once per pair and using D = rowsum(dO * O).

  dK and dV are accumulated transposed (`[d, sk]` per block): on XLA's CPU dot, P^T dO
  contracted over the queries runs about 3x slower than dO^T P, its transpose.
  """
  q, k, v, kv_valid, out, lse, rng, bias_consts = residuals
  # Gradients only for the bias's floating-point arrays (others get float0 zeros).
  trainable = [jnp.issubdtype(c.dtype, jnp.inexact) for c in bias_consts]
  lq, lk, d = q.shape[2], k.shape[2], q.shape[-1]
  scale = 1.0 / jnp.sqrt(jnp.asarray(d, q.dtype))
  delta = (d_out * out).sum(-1, keepdims=True)  # D = rowsum(dO * O), [b, h, lq, 1]
  qb, dob, delta_b = _blocks(q * scale, block_q), _blocks(d_out, block_q), _blocks(delta, block_q)
  kb, vb = _blocks(k, block_k), _blocks(v, block_k)
  valid = _blocks(kv_valid, block_k, axis=1)
  offset = lk - lq

  def bias_grads(q_pos, k_pos, d_bias):
    """Pulls the bias block's cotangent `[h, sq, sk]` back to the bias's float arrays."""
    def of_trainable(*floats):
      it = iter(floats)
      consts = [next(it) if t else c for c, t in zip(bias_consts, trainable)]
      return bias_fn(q_pos, k_pos, *consts)
    floats = [c for c, t in zip(bias_consts, trainable) if t]
    _, pullback = jax.vjp(of_trainable, *floats)
    return pullback(d_bias.astype(jnp.float32))

  def one_query_block(acc, inputs):
    qi, q_blk, do_blk, lse_blk, delta_blk = inputs
    q_pos = qi * block_q + jnp.arange(block_q) + offset
    bias_q_pos = q_pos if causal else q_pos - offset

    def step(carry, inputs):
      ki, k_blk, v_blk, valid_blk = inputs

      def compute(carry):
        dq, d_consts = carry
        k_pos = ki * block_k + jnp.arange(block_k)
        s = jnp.einsum("bhqd,bhkd->bhqk", q_blk, k_blk)
        s = _add_score_bias(s, bias_fn, bias_consts, bias_q_pos, k_pos)
        p = jnp.exp(s + _bias(valid_blk, q_pos, k_pos, causal, s.dtype) - lse_blk[..., None])
        dp = jnp.einsum("bhqd,bhkd->bhqk", do_blk, v_blk)
        p_dropped = p
        if dropout_rate > 0.0:
          keep = _keep(rng, qi, ki, p.shape, dropout_rate, p.dtype)
          dp, p_dropped = dp * keep, p * keep
        ds = p * (dp - delta_blk)
        dk_t = jnp.einsum("bhqd,bhqk->bhdk", q_blk, ds)  # q_blk already carries the scale
        dv_t = jnp.einsum("bhqd,bhqk->bhdk", do_blk, p_dropped)
        if d_consts:  # dS is also the bias block's gradient (dS/dbias = 1), summed over b
          d_consts = tuple(a + g for a, g in
                           zip(d_consts, bias_grads(bias_q_pos, k_pos, ds.sum(0))))
        dq = dq + jnp.einsum("bhqk,bhkd->bhqd", ds, k_blk)
        return (dq, d_consts), (dk_t, dv_t)

      def skip(carry):
        zeros = jnp.zeros(k_blk.shape[:2] + (d, block_k), q.dtype)
        return carry, (zeros, zeros)

      return _when(_visible(causal, qi, ki, block_q, block_k, offset), compute, skip, carry)

    (dq, d_consts), (dk_t, dv_t) = jax.lax.scan(
        step, (jnp.zeros_like(q_blk), acc[2]), (jnp.arange(kb.shape[0]), kb, vb, valid))
    return (acc[0] + dk_t, acc[1] + dv_t, d_consts), dq * scale

  zeros = jnp.zeros(kb.shape[:3] + (d, block_k), q.dtype)  # [nk, b, h, d, sk]
  d_consts = tuple(jnp.zeros_like(c) for c, t in zip(bias_consts, trainable) if t)
  (dk_t, dv_t, d_consts), dq = jax.lax.scan(one_query_block, (zeros, zeros, d_consts),
                                            (jnp.arange(qb.shape[0]), qb, dob, lse, delta_b))
  untranspose = lambda x: _unblock(jnp.swapaxes(x, -1, -2), lk)
  it = iter(d_consts)
  d_bias_consts = tuple(next(it) if t else _float0_or_zero(c)
                        for c, t in zip(bias_consts, trainable))
  return (_unblock(dq, lq), untranspose(dk_t), untranspose(dv_t), None, None, d_bias_consts)


_attention.defvjp(_forward, _backward)


def blocked_softmax_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False,
                              block_q=256, block_k=16384, dropout_rate=0.0, dropout_rng=None,
                              deterministic=True, float32_softmax=True, score_bias=None):
  """Exact attention, same contract as `softmax_attention`, O(L * block) memory.

  `float32_softmax=False` keeps the inputs' dtype inside (bfloat16: the running max, normaliser
  and output are then rounded at every key block); the output has q's dtype either way."""
  b, lq = q.shape[:2]
  lk = k.shape[1]
  block_q, block_k = min(block_q, lq), min(block_k, lk)
  kv_valid = jnp.ones((b, lk), bool) if kv_mask is None else kv_mask
  rate = 0.0 if deterministic else float(dropout_rate)
  rng = dropout_rng if rate > 0.0 else jax.random.key(0)
  out_dtype = q.dtype
  # float32 inside by default, whatever the model's dtype (bfloat16): the running max,
  # normaliser and output are rescaled and summed over every key block, too long a chain for
  # bfloat16. Heads-major inside (`[b, h, l, d]`), so that every block product is a plain
  # batched matmul.
  compute = jnp.promote_types(q.dtype, jnp.float32) if float32_softmax else q.dtype
  q, k, v = (jnp.swapaxes(t.astype(compute), 1, 2) for t in (q, k, v))
  bias_fn, bias_consts = None, ()
  if score_bias is not None:  # its closed-over arrays become arguments of the custom VJP
    example = (jnp.zeros(block_q, jnp.int32), jnp.zeros(block_k, jnp.int32))
    bias_fn, bias_consts = jax.closure_convert(score_bias, *example)
    bias_consts = tuple(bias_consts)
  out = _attention(q, k, v, kv_valid, causal, block_q, block_k, rate, bias_fn, rng, bias_consts)
  out = jnp.swapaxes(out, 1, 2)
  return masks.zero_padded_queries(out.astype(out_dtype), q_mask)
