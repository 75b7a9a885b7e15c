"""Bidirectional FAVOR+ (softmax kernel) streamed over length chunks, with a hand-written VJP.

It computes the same numbers as `performer.performer_attention(kernel="softmax",
causal=False)`. With x' = x / d^(1/4) and W the `[m, d]` random projection (Choromanski et al.
2021, Lemma 1; the common factor m^(-1/2) cancels between numerator and denominator):

  phi_q(y) = exp(W y' - max_r (W y')_r) + eps          (|y'|^2 / 2 cancels in the query's max)
  phi_k(x) = exp(W x' - |x'|^2 / 2 - M) + eps          (M: max over real keys and features)
  out_i = phi_q_i^T KV / phi_q_i^T Z,  KV = sum_j phi_k_j v_j^T,  Z = sum_j phi_k_j   (eq. 3)

Autodiff of that formula keeps the `[b, L, h, m]` feature arrays for the backward pass and
streams each of them through memory several times. Here the forward pass streams key chunks
into KV and Z, keeping M as a running max with the online-softmax rescaling (the eps part does
not scale, so it is summed apart and added at the end), then query chunks out of KV and Z. Only
q, k, v, KV, Z, M, the output and its denominator are saved. The backward pass streams again:
query chunks give dq and accumulate dKV, dZ; key chunks then give dk and dv. Features exist one
chunk at a time, in cache, in both directions.

Not a registered variant: `performer` uses it for its bidirectional softmax-kernel form.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from einops import rearrange

from models.attention.feature_maps import LOG_ZERO


def _chunks(x, size):
  """`[b, l, h, ...]` -> `[n, b, h, size, ...]` (l padded with zeros up to a multiple of size)."""
  pad = (-x.shape[1]) % size
  if pad:
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
  return rearrange(x, "b (n c) h ... -> n b h c ...", c=size)


def _unchunk(x, length):
  return rearrange(x, "n b h c ... -> b (n c) h ...")[:, :length]


def _key_log_features(x, projection, keep):
  """log phi_k before the max: W x' - |x'|^2 / 2, LOG_ZERO at padded keys. x: `[b,h,c,d]`."""
  log_k = (jnp.einsum("bhcd,md->bhcm", x, projection)
           - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True))
  return jnp.where(keep[..., None], log_k, LOG_ZERO)


def _query_features(y, projection, eps):
  """phi_q without its m^(-1/2) factor; also returns exp(.) alone (= phi_q - eps)."""
  logits = jnp.einsum("bhcd,md->bhcm", y, projection)
  e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
  return e + eps, e


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def streamed_favor(q, k, v, projection, kv_keep, eps, chunk_size):
  """q: `[b, lq, h, d]`, k/v: `[b, lk, h, d]`, projection `[m, d]`, kv_keep bool `[b, lk]`.

  Callers zero padded keys and values and mask padded query outputs (as `performer` does),
  and pass one float dtype for q, k, v and projection (`performer` passes float32).
  """
  return _forward(q, k, v, projection, kv_keep, eps, chunk_size)[0]


def _forward(q, k, v, projection, kv_keep, eps, chunk_size):
  b, lq, h, d = q.shape
  scale = d ** -0.25
  keep = jnp.broadcast_to(kv_keep[:, :, None], kv_keep.shape + (h,))
  kc, vc, keepc = _chunks(k * scale, chunk_size), _chunks(v, chunk_size), _chunks(keep, chunk_size)

  def add_keys(carry, chunk):
    kv, z, running_max = carry
    x, values, keep_c = chunk
    log_k = _key_log_features(x, projection, keep_c)
    new_max = jnp.maximum(running_max, jnp.max(log_k, axis=(2, 3)))       # [b, h]
    e = jnp.where(keep_c[..., None], jnp.exp(log_k - new_max[..., None, None]), 0.0)
    rescale = jnp.exp(running_max - new_max)   # earlier chunks, to the new max (online softmax)
    kv = rescale[..., None, None] * kv + jnp.einsum("bhcm,bhcd->bhmd", e, values)
    z = rescale[..., None] * z + jnp.sum(e, axis=2)
    return (kv, z, new_max), None

  m = projection.shape[0]
  init = (jnp.zeros((b, h, m, v.shape[-1]), v.dtype), jnp.zeros((b, h, m), v.dtype),
          jnp.full((b, h), LOG_ZERO, q.dtype))
  (kv, z, key_max), _ = jax.lax.scan(add_keys, init, (kc, vc, keepc))
  # The eps term of every real key, unscaled by the max: eps * sum_j v_j and eps * count.
  value_sum = jnp.sum(jnp.where(kv_keep[:, :, None, None], v, 0.0), axis=1)   # [b, h, d]
  kv = kv + eps * value_sum[:, :, None, :]
  z = z + eps * jnp.sum(kv_keep, axis=1).astype(v.dtype)[:, None, None]

  def read_queries(y):
    phi, _ = _query_features(y, projection, eps)
    numerator = jnp.einsum("bhcm,bhmd->bhcd", phi, kv)
    denominator = jnp.einsum("bhcm,bhm->bhc", phi, z)
    denominator = jnp.where(denominator > 0, denominator, 1.0)   # no real key at all
    return numerator / denominator[..., None], denominator

  out, den = jax.lax.map(read_queries, _chunks(q * scale, chunk_size))
  out = _unchunk(out, lq)
  return out, (q, k, v, projection, kv_keep, kv, z, key_max, out, _unchunk(den, lq))


def _backward(eps, chunk_size, residuals, grad_out):
  q, k, v, projection, kv_keep, kv, z, key_max, out, den = residuals
  b, lq, h, d = q.shape
  scale = d ** -0.25
  qs = _chunks(q * scale, chunk_size)
  g = _chunks(grad_out / den[..., None], chunk_size)                      # G_i = g_i / den_i
  c = _chunks(jnp.sum(grad_out * out, axis=-1) / den, chunk_size)         # (g_i . out_i) / den_i

  def query_chunk(carry, chunk):
    d_kv, d_z, d_w = carry
    y, g_c, c_c = chunk
    phi, e = _query_features(y, projection, eps)
    # d phi_q = KV G - Z c (quotient rule on out = n / den); the max is a constant.
    d_logits = e * (jnp.einsum("bhcd,bhmd->bhcm", g_c, kv) - c_c[..., None] * z[:, :, None, :])
    d_y = jnp.einsum("bhcm,md->bhcd", d_logits, projection)
    d_kv = d_kv + jnp.einsum("bhcm,bhcd->bhmd", phi, g_c)
    d_z = d_z - jnp.einsum("bhcm,bhc->bhm", phi, c_c)
    d_w = d_w + jnp.einsum("bhcm,bhcd->md", d_logits, y)
    return (d_kv, d_z, d_w), d_y * scale

  init = (jnp.zeros_like(kv), jnp.zeros_like(z), jnp.zeros_like(projection))
  (d_kv, d_z, d_w), dq = jax.lax.scan(query_chunk, init, (qs, g, c))

  keep = jnp.broadcast_to(kv_keep[:, :, None], kv_keep.shape + (h,))

  def key_chunk(d_w, chunk):
    x, values, keep_c = chunk
    e = jnp.where(keep_c[..., None],
                  jnp.exp(_key_log_features(x, projection, keep_c) - key_max[..., None, None]),
                  0.0)
    phi = e + eps * keep_c[..., None]
    d_phi = jnp.einsum("bhcd,bhmd->bhcm", values, d_kv) + d_z[:, :, None, :]
    d_values = jnp.einsum("bhcm,bhmd->bhcd", phi, d_kv)
    d_log = d_phi * e
    # log phi_k = W x' - |x'|^2 / 2: d x' = d_log W - x' sum_r d_log_r
    d_x = jnp.einsum("bhcm,md->bhcd", d_log, projection) - x * jnp.sum(d_log, -1, keepdims=True)
    d_w = d_w + jnp.einsum("bhcm,bhcd->md", d_log, x)
    return d_w, (d_x * scale, d_values)

  d_w, (dk, dv) = jax.lax.scan(
      key_chunk, d_w, (_chunks(k * scale, chunk_size), _chunks(v, chunk_size),
                       _chunks(keep, chunk_size)))
  lk = k.shape[1]
  return _unchunk(dq, lq), _unchunk(dk, lk), _unchunk(dv, lk), d_w, None


streamed_favor.defvjp(_forward, _backward)
