"""Mask helpers shared by attention variants (padding masks come from the data pipeline)."""
import jax.numpy as jnp


def big_negative(dtype) -> float:
  """A finite stand-in for -inf, so fully masked rows give zeros rather than NaN."""
  return float(jnp.finfo(dtype).min) / 2


def padding_bias(q_mask, kv_mask, dtype):
  """Additive bias `[b, 1, lq, lk]` that removes padded keys; None when there are no masks."""
  if kv_mask is None:
    return None
  keep = kv_mask[:, None, None, :]
  return jnp.where(keep, 0.0, big_negative(dtype)).astype(dtype)


def causal_bias(lq: int, lk: int, dtype):
  """`[1, 1, lq, lk]` bias forbidding key j > query i (queries aligned to the keys' end)."""
  offset = lk - lq
  allowed = jnp.arange(lk)[None, :] <= jnp.arange(lq)[:, None] + offset
  return jnp.where(allowed, 0.0, big_negative(dtype)).astype(dtype)[None, None]


def zero_padded_queries(out, q_mask):
  """Zeroes outputs at padded query positions (`out`: `[b, l, h, d]`)."""
  if q_mask is None:
    return out
  return jnp.where(q_mask[:, :, None, None], out, 0.0)
