"""Step-by-step decoding against the causal full forward, for the attention variants' tests
(models/attention/decoding.py's protocol): one token at a time through the "cache" collection,
under jit, compared with the full forward over the whole sequence."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.attention import decoding


def mixer_steps(mixer, q, k, v, *, inputs_q=None, score_bias=None, params=None):
  """Decodes a qkv mixer token by token. q `[b, L, h, d]`, k/v `[b, L, kv_heads, d]` (as the
  base hands them in decode mode). Returns (full `[b, L, h, d]` causal forward with the kv
  heads repeated, stepped `[b, L, h, d]`, the cache after the init call)."""
  heads = q.shape[2]
  k_full, v_full = decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads)
  extra = {} if score_bias is None else {"score_bias": score_bias}
  if params is None:
    params = mixer.init(jax.random.key(0), q, k_full, v_full, inputs_q=inputs_q,
                        **extra).get("params", {})
  full = mixer.apply({"params": params}, q, k_full, v_full, inputs_q=inputs_q, **extra)
  _, init_vars = mixer.apply({"params": params}, q, k, v, inputs_q=inputs_q, decode=True,
                             mutable=["cache"], **extra)
  cache0 = init_vars["cache"]

  @jax.jit
  def step(cache, qt, kt, vt, xt):
    return mixer.apply({"params": params, "cache": cache}, qt, kt, vt, inputs_q=xt,
                       decode=True, mutable=["cache"], **extra)

  cache, outs = cache0, []
  for t in range(q.shape[1]):
    xt = None if inputs_q is None else inputs_q[:, t:t + 1]
    y, new = step(cache, q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], xt)
    cache = new["cache"]
    outs.append(y)
  return np.asarray(full), np.asarray(jnp.concatenate(outs, axis=1)), cache0


def cache_shapes(cache):
  return jax.tree_util.tree_map(lambda x: tuple(x.shape), cache)


def base_steps(layer, x, params=None):
  """The same through MultiHeadAttention (models/attention/base.py): x `[b, L, e]`."""
  if params is None:
    params = layer.init(jax.random.key(0), x)["params"]
  full = layer.apply({"params": params}, x)
  _, init_vars = layer.apply({"params": params}, x, decode=True, mutable=["cache"])

  @jax.jit
  def step(cache, xt):
    return layer.apply({"params": params, "cache": cache}, xt, decode=True, mutable=["cache"])

  cache, outs = init_vars["cache"], []
  for t in range(x.shape[1]):
    y, new = step(cache, x[:, t:t + 1])
    cache = new["cache"]
    outs.append(y)
  return np.asarray(full), np.asarray(jnp.concatenate(outs, axis=1)), init_vars["cache"]


def random_qkv_heads(seed, *, batch=2, length=12, heads=4, kv_heads=2, depth=8,
                     dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (batch, length, heads, depth), dtype)
  k = jax.random.normal(kk, (batch, length, kv_heads, depth), dtype)
  v = jax.random.normal(kv, (batch, length, kv_heads, depth), dtype)
  return q, k, v
