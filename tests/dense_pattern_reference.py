"""Dense references for the block-sparse attention tests: exact softmax attention restricted
to a pattern given as an explicit `[L, L]` (or `[h, L, L]`) mask. Tests only; the variants
themselves never build these."""
import jax
import jax.numpy as jnp
import numpy as np


def pattern_attention(q, k, v, allowed, q_mask=None, kv_mask=None):
  """softmax over the allowed keys of each query; a query with none gets zeros.

  q/k/v `[b, l, h, d]`; allowed bool `[l, l]` or `[h, l, l]` (query, key); masks `[b, l]`.
  """
  heads, length = q.shape[2], q.shape[1]
  allowed = np.broadcast_to(np.asarray(allowed, bool), (heads, length, length))
  return _pattern_attention(q, k, v, jnp.asarray(allowed), q_mask, kv_mask)


@jax.jit
def _pattern_attention(q, k, v, allowed, q_mask, kv_mask):
  depth = q.shape[-1]
  keep = allowed[None]
  if kv_mask is not None:
    keep = keep & kv_mask[:, None, None, :]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(depth)
  logits = jnp.where(keep, logits, -1e30)
  weights = jnp.where(keep, jax.nn.softmax(logits, axis=-1), 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  if q_mask is not None:
    out = jnp.where(q_mask[:, :, None, None], out, 0.0)
  return out


def random_qkv(seed, batch=2, length=16, heads=2, depth=8):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal((batch, length, heads, depth)), jnp.float32)
          for _ in range(3)]


def ragged_mask(length, valid_lengths):
  """Bool `[len(valid_lengths), length]`: the first `valid` positions of each row are real."""
  return jnp.arange(length)[None, :] < jnp.asarray(valid_lengths)[:, None]


def run_jitted(fn, q, k, v, mask=None, **settings):
  """`fn(q, k, v, q_mask=mask, kv_mask=mask, **settings)` compiled once (faster than eager)."""
  call = jax.jit(lambda q, k, v, mask: fn(q, k, v, q_mask=mask, kv_mask=mask, **settings))
  return call(q, k, v, mask)
