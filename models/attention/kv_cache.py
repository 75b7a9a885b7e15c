"""Key/value caches for incremental decoding (models/attention/decoding.py's protocol), shared
by the exact and pattern-sparse attention variants (transformer, longformer, sparse_transformer,
synthesizer: a full cache; local: a window).

`full_cache`: `cached_key` / `cached_value` `[b, L, kv_heads, d]` in the input dtype (L = the
length of the call that creates the cache: the most tokens that will be decoded), written at
the token's position. `window_cache`: a ring buffer of `size` slots (slot = position % size)
and `cached_position` `[size]` int32 (-1 = empty), so it never grows past `size`.
`attend_one`: one query token's softmax over the cached keys, restricted to an `allowed` mask
over the cache slots; the query heads are grouped over the kv heads (head i reads kv head
i // (h / kv_heads), as `decoding.repeat_kv`) without repeating the cache.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models.attention import decoding, masks


def decode_full_cache(module, q, k, v, *, queries: bool = False):
  """The decode-mode prologue of a mixer with a full cache: creates or advances it.
  Returns `(stepping, index, cache, k, v)`: `cache` = (keys, values) or, with `queries`, also
  the cached queries `[b, L, h, d]` first (mixers whose step recomputes earlier queries' rows:
  axial, H-1D); `k`/`v` repeated to q's heads for the full forward of the creating call."""
  stepping, index = decoding.decode_index(module)
  keys, values = full_cache(module, k, v, stepping, index)
  cache = (keys, values)
  if queries:
    cached_q = module.variable("cache", "cached_query", jnp.zeros, q.shape, q.dtype)
    if stepping:
      cached_q.value = jax.lax.dynamic_update_slice(cached_q.value, q, (0, index, 0, 0))
    cache = (cached_q.value,) + cache
  heads = q.shape[2]
  return stepping, index, cache, decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads)


def full_cache(module, k, v, stepping: bool, index, *, keys: bool = True):
  """(keys, values) `[b, L, kv_heads, d]`: every position so far (later slots hold zeros).
  `keys=False`: only the values are cached (keys returned as None)."""
  cached_k = (module.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
              if keys else None)
  cached_v = module.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
  if stepping:
    start = (0, index, 0, 0)
    for cached, new in ((cached_k, k), (cached_v, v)):
      if cached is not None:
        cached.value = jax.lax.dynamic_update_slice(cached.value, new.astype(cached.value.dtype),
                                                    start)
  return (cached_k.value if keys else None), cached_v.value


def window_cache(module, k, v, stepping: bool, index, size: int):
  """(keys, values, positions): a ring buffer of the last `size` tokens' keys and values
  `[b, size, kv_heads, d]` and their positions `[size]` (-1: an empty slot)."""
  b, _, heads, depth = k.shape
  cached_k = module.variable("cache", "cached_key", jnp.zeros, (b, size, heads, depth), k.dtype)
  cached_v = module.variable("cache", "cached_value", jnp.zeros, (b, size, heads, depth),
                             v.dtype)
  cached_pos = module.variable("cache", "cached_position",
                               lambda: jnp.full((size,), -1, jnp.int32))
  if stepping:
    slot = index % size
    cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k.astype(cached_k.value.dtype),
                                                  (0, slot, 0, 0))
    cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v.astype(cached_v.value.dtype),
                                                  (0, slot, 0, 0))
    cached_pos.value = cached_pos.value.at[slot].set(index.astype(jnp.int32))
  return cached_k.value, cached_v.value, cached_pos.value


def attend_one(q, keys, values, allowed, *, bias=None, float32_softmax=True, scale=True):
  """q `[b, 1, h, d]`, keys/values `[b, n, g, d]` (g kv heads dividing h), `allowed` bool
  broadcastable to `[b, h, n]`, `bias` (float32, broadcastable to `[b, h, n]`) added to the
  scaled logits -> `[b, 1, h, d]` in q's dtype. A query with no allowed key outputs zeros
  (as `blocking.joint_softmax`). `scale`: divide the logits by sqrt(d) (False where q already
  carries it)."""
  b, _, h, d = q.shape
  g = keys.shape[2]
  if h % g:
    raise ValueError(f"{g} key/value heads do not divide {h} query heads")
  compute = jnp.promote_types(q.dtype, jnp.float32) if float32_softmax else q.dtype
  qg = q[:, 0].reshape(b, g, h // g, d)
  logits = jnp.einsum("bgrd,bngd->bgrn", qg, keys, preferred_element_type=compute)
  logits = logits.reshape(b, h, -1)
  if scale:
    logits = logits / jnp.sqrt(d).astype(compute)
  if bias is not None:
    logits = logits + jnp.asarray(bias).astype(compute)
  return weighted_values(logits, values, allowed, compute, q.dtype)


def weighted_values(logits, values, allowed, compute, dtype):
  """softmax over the allowed slots of `logits` `[b, h, n]`, times `values` `[b, n, g, d]`
  (grouped heads) -> `[b, 1, h, d]`; zero where no slot is allowed."""
  b, h, n = logits.shape
  g, d = values.shape[2:]
  allowed = jnp.broadcast_to(allowed, (b, h, n))
  logits = jnp.where(allowed, logits.astype(compute), masks.big_negative(compute))
  top = logits.max(axis=-1, keepdims=True)
  exps = jnp.where(allowed, jnp.exp(logits - top), 0.0)
  total = exps.sum(axis=-1, keepdims=True)
  weights = exps / jnp.where(total > 0, total, 1.0)
  out = jnp.einsum("bgrn,bngd->bgrd", weights.reshape(b, g, h // g, n), values.astype(compute),
                   preferred_element_type=compute)
  return out.reshape(b, 1, h, d).astype(dtype)
