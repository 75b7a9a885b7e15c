"""Kernelised (linear) attention over feature maps, shared by `performer` and `linear_transformer`.

Given non-negative features phi(q), phi(k), attention is (Katharopoulos et al. 2020, eq. 4-6)

  out_i = phi(q_i)^T sum_j phi(k_j) v_j^T / phi(q_i)^T sum_j phi(k_j),

computed as (phi(q) (phi(k)^T V)) without an [L, L] matrix. The causal form (eqs. 16-20: the
running state S_i = sum_{j<=i} phi(k_j) v_j^T, z_i = sum_{j<=i} phi(k_j)) is computed chunk-wise:
a `lax.scan` over chunks carries S and z, and inside a chunk the masked [C, C] products are exact.
Features are `[b, l, h, m]`, values `[b, l, h, d]`; callers zero the features of padded keys.
Both forms compute in float32 whatever the inputs' dtype (sums of features over the whole
length lose too much in bfloat16) and return the values' dtype.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from einops import rearrange

from models.attention import masks

# Stand-in for log(0) in key log-scales: finite, so differences of two of them stay finite.
LOG_ZERO = -1e30


@functools.partial(jax.jit, static_argnames="eps")
def linear_attention(phi_q, phi_k, v, *, eps: float):
  """Bidirectional linear attention (eq. 6): `[b, lq, h, d]` in O(L m d), in v's dtype."""
  out_dtype = v.dtype
  # float32 inside: z and kv sum features over every key (eq. 6), too long a sum for bfloat16.
  phi_q, phi_k, v = (x.astype(jnp.float32) for x in (phi_q, phi_k, v))
  # Heads-major layout: both products become plain batched matmuls over (b, h), which XLA's
  # CPU backend runs about twice as fast as the same einsums on `[b, l, h, .]` operands.
  phi_q, phi_k, v = (rearrange(x, "b l h m -> b h l m") for x in (phi_q, phi_k, v))
  kv = jnp.einsum("bhlm,bhld->bhmd", phi_k, v)   # sum_j phi(k_j) v_j^T
  z = jnp.sum(phi_k, axis=2)                      # sum_j phi(k_j): [b, h, m]
  numerator = phi_q @ kv
  denominator = phi_q @ z[..., None] + eps
  out = numerator / jnp.where(denominator > 0, denominator, 1.0)
  return rearrange(out, "b h l d -> b l h d").astype(out_dtype)


@functools.partial(jax.jit, static_argnames=("eps", "chunk_size"))
def causal_linear_attention(phi_q, phi_k, v, *, eps: float, chunk_size: int,
                            key_log_scale=None):
  """Causal linear attention by a chunked prefix sum (eqs. 16-20): `[b, l, h, d]`.

  `key_log_scale` (`[b, l, h]`, optional) lets a caller pass key features in scaled form: the
  true feature of key j is `phi_k[j] * exp(key_log_scale[j])`. The running maximum of the
  scales (over keys j <= i only, so nothing looks ahead) is factored out as in an online
  softmax, so exp() never overflows; it cancels exactly between numerator and denominator.
  """
  b, length, h, m = phi_k.shape
  if phi_q.shape[1] != length:
    raise ValueError(f"causal linear attention needs as many queries as keys; got "
                     f"{phi_q.shape[1]} queries and {length} keys")
  out_dtype = v.dtype
  # float32 inside, whatever the inputs' dtype: the carried state S, z is a prefix sum over the
  # whole length (bfloat16 would lose it), and the scan carry must keep one dtype.
  phi_q, phi_k, v = (x.astype(jnp.float32) for x in (phi_q, phi_k, v))
  if key_log_scale is None:
    key_log_scale = jnp.zeros((b, length, h), jnp.float32)
  key_log_scale = key_log_scale.astype(jnp.float32)
  chunk = max(1, min(chunk_size, length))
  padded = -(-length // chunk) * chunk
  pad = lambda x, value=0.0: jnp.pad(x, [(0, 0), (0, padded - length)] + [(0, 0)] * (x.ndim - 2),
                                     constant_values=value)
  # [num_chunks, b, chunk, ...]: the scan runs over the leading axis.
  to_chunks = lambda x: jnp.moveaxis(x.reshape((b, padded // chunk, chunk) + x.shape[2:]), 1, 0)
  xs = (to_chunks(pad(phi_q)), to_chunks(pad(phi_k)), to_chunks(pad(v)),
        to_chunks(pad(jax.lax.stop_gradient(key_log_scale), LOG_ZERO)))
  causal = jnp.tril(jnp.ones((chunk, chunk), bool))  # within one chunk only: [C, C]

  def step(carry, chunk_inputs):
    state, normaliser, scale_before = carry   # [b,h,m,d], [b,h,m], [b,h]
    q_c, k_c, v_c, s_c = chunk_inputs          # [b,C,h,m] x2, [b,C,h,d], [b,C,h]
    # Reference log-scale of query i: the largest key scale seen up to and including i.
    running = jnp.maximum(jax.lax.cummax(s_c, axis=1), scale_before[:, None, :])  # [b,C,h]
    # Within the chunk: exact masked products, weight exp(s_j - running_i) <= 1 for j <= i.
    log_factor = s_c.transpose(0, 2, 1)[:, :, None, :] - running.transpose(0, 2, 1)[..., None]
    factor = jnp.exp(jnp.where(causal, log_factor, LOG_ZERO))   # [b,h,C,C]
    weights = jnp.einsum("bihm,bjhm->bhij", q_c, k_c) * factor
    numerator = jnp.einsum("bhij,bjhd->bihd", weights, v_c)
    denominator = jnp.sum(weights, axis=-1).transpose(0, 2, 1)  # [b,C,h]
    # Earlier chunks: the carried state, rescaled from scale_before to each query's scale.
    earlier = jnp.exp(scale_before[:, None, :] - running)         # [b,C,h]
    numerator += earlier[..., None] * jnp.einsum("bihm,bhmd->bihd", q_c, state)
    denominator += earlier * jnp.einsum("bihm,bhm->bih", q_c, normaliser)
    # New state at the scale of the chunk's last position.
    scale_after = running[:, -1]                                  # [b,h]
    key_weight = jnp.exp(s_c - scale_after[:, None, :])[..., None] * k_c
    decay = jnp.exp(scale_before - scale_after)
    state = decay[..., None, None] * state + jnp.einsum("bjhm,bjhd->bhmd", key_weight, v_c)
    normaliser = decay[..., None] * normaliser + jnp.sum(key_weight, axis=1)
    denominator = denominator[..., None] + eps
    out = numerator / jnp.where(denominator > 0, denominator, 1.0)
    return (state, normaliser, scale_after), out

  init = (jnp.zeros((b, h, m, v.shape[-1]), jnp.float32), jnp.zeros((b, h, m), jnp.float32),
          jnp.full((b, h), LOG_ZERO, jnp.float32))
  _, out = jax.lax.scan(step, init, xs)
  out = jnp.moveaxis(out, 0, 1).reshape((b, padded) + out.shape[3:])
  return out[:, :length].astype(out_dtype)


def padded_linear_attention(phi_q, phi_k, v, *, q_mask, kv_mask, causal: bool, eps: float,
                            chunk_size: int):
  """Linear attention with padding: padded keys get zero features (so their values never
  count and need no zeroing), padded queries zero outputs; causal by chunked prefix sums."""
  if kv_mask is not None:
    phi_k = jnp.where(kv_mask[:, :, None, None], phi_k, 0.0)
  if causal:
    out = causal_linear_attention(phi_q, phi_k, v, eps=eps, chunk_size=chunk_size)
  else:
    out = linear_attention(phi_q, phi_k, v, eps=eps)
  return masks.zero_padded_queries(out, q_mask)


def grouped_readout(phi_q, state, normaliser):
  """phi(q)^T S and phi(q)^T z for one token: phi_q `[b, h, m]` with h query heads, the state
  `[b, kh, m, d]` / `[b, kh, m]` over kh key/value heads (query head i reads k/v head
  i // (h / kh), as `decoding.repeat_kv`): `[b, h, d]`, `[b, h]`, without repeating the state."""
  b, h, m = phi_q.shape
  kh = state.shape[1]
  grouped = phi_q.reshape(b, kh, h // kh, m)
  numerator = jnp.einsum("bkgm,bkmd->bkgd", grouped, state).reshape(b, h, -1)
  denominator = jnp.einsum("bkgm,bkm->bkg", grouped, normaliser).reshape(b, h)
  return numerator, denominator


class LinearState:
  """The RNN view of causal linear attention for incremental decoding (Katharopoulos et al.
  2020, eqs. 18-20): S_i = S_{i-1} + phi(k_i) v_i^T, z_i = z_{i-1} + phi(k_i),
  out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps). Held in a mixer's "cache" collection in
  float32, `[b, kv_heads, m, d]` and `[b, kv_heads, m]` whatever the length: constant size.

  `scaled=True` keeps keys in the scaled form of `causal_linear_attention` (true feature
  phi_k * exp(key_log_scale)): the state is held at the scale of the largest key so far (a
  running max, `[b, kv_heads]`), rescaled when a larger one arrives, so exp() never overflows;
  the same reference as the chunked form's, which it therefore reproduces.
  """

  def __init__(self, module, batch: int, kv_heads: int, num_features: int, dim: int,
               scaled: bool = False):
    zeros = lambda *shape: (lambda: jnp.zeros(shape, jnp.float32))
    self.state = module.variable("cache", "state", zeros(batch, kv_heads, num_features, dim))
    self.normaliser = module.variable("cache", "normaliser",
                                      zeros(batch, kv_heads, num_features))
    self.scale = (module.variable("cache", "key_scale",
                                  lambda: jnp.full((batch, kv_heads), LOG_ZERO, jnp.float32))
                  if scaled else None)

  def step(self, phi_q, phi_k, v, *, eps: float, key_log_scale=None):
    """One token: phi_q `[b, 1, h, m]`, phi_k `[b, 1, kh, m]`, v `[b, 1, kh, d]`,
    key_log_scale `[b, 1, kh]` (scaled only) -> `[b, 1, h, d]` in v's dtype; updates the cache."""
    phi_q, phi_k, v32 = (x[:, 0].astype(jnp.float32) for x in (phi_q, phi_k, v))
    state, normaliser = self.state.value, self.normaliser.value
    if self.scale is not None:
      before = self.scale.value
      after = jnp.maximum(before, key_log_scale[:, 0].astype(jnp.float32))
      decay = jnp.exp(before - after)
      phi_k = jnp.exp(key_log_scale[:, 0] - after)[..., None] * phi_k
      state, normaliser = decay[..., None, None] * state, decay[..., None] * normaliser
      self.scale.value = after
    state = state + jnp.einsum("bkm,bkd->bkmd", phi_k, v32)      # eq. 18
    normaliser = normaliser + phi_k                              # eq. 19
    self.state.value, self.normaliser.value = state, normaliser
    numerator, denominator = grouped_readout(phi_q, state, normaliser)   # eq. 20
    denominator = denominator[..., None] + eps
    out = numerator / jnp.where(denominator > 0, denominator, 1.0)
    return out[:, None].astype(v.dtype)
