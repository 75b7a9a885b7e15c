"""Shared checks of incremental decoding for the constant-state mixers (linear_transformer,
performer, rfa, cosformer, aft): stepping token by token through the "cache" collection
(models/attention/decoding.py) equals the causal full forward, under jit."""
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import base


def qkv(seed, length, batch=2, heads=2, kv_heads=2, dim=8, dtype=np.float32):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, length, heads, dim)).astype(dtype)
  k, v = (rng.standard_normal((batch, length, kv_heads, dim)).astype(dtype) for _ in range(2))
  return q, k, v


def step_through(apply_step, cache, tokens):
  """Runs `apply_step(cache, *token_t)` -> (y_t, cache) for t = 0..L-1 (tokens: arrays
  `[b, L, ...]`); returns the outputs stacked on the length axis and the last cache."""
  step = jax.jit(apply_step)
  outputs = []
  for t in range(tokens[0].shape[1]):
    y, cache = step(cache, *(x[:, t:t + 1] for x in tokens))
    outputs.append(y)
  return jnp.concatenate(outputs, axis=1), cache


def mixer_decode(mixer, q, k, v, inputs_q=None, seed=0):
  """(causal full forward, token-by-token outputs, cache) of a qkv mixer; k/v may have fewer
  heads than q (the base hands a decoding mixer its key/value heads): the full forward gets
  them repeated, as the base does outside decoding."""
  heads = q.shape[2]
  group = heads // k.shape[2]
  extra = {} if inputs_q is None else {"inputs_q": inputs_q}
  k_full, v_full = (jnp.repeat(x, group, axis=2) for x in (k, v))
  variables = mixer.init(jax.random.key(seed), q, k_full, v_full, **extra)
  full = mixer.apply(variables, q, k_full, v_full, **extra)
  cache = mixer.init(jax.random.key(seed), q, k, v, decode=True, **extra)["cache"]
  params = {c: x for c, x in variables.items() if c != "cache"}

  def apply_step(cache, q_t, k_t, v_t, *rest):
    more = {} if not rest else {"inputs_q": rest[0]}
    return mixer.apply({**params, "cache": cache}, q_t, k_t, v_t, decode=True,
                       mutable=["cache"], **more)

  def unpack(cache_out):
    y, mutated = cache_out
    return y, mutated["cache"]

  tokens = (q, k, v) + (() if inputs_q is None else (inputs_q,))
  stepped, cache = step_through(lambda c, *x: unpack(apply_step(c, *x)), cache, tokens)
  return full, stepped, cache


def cache_shapes(cache):
  return jax.tree_util.tree_map(lambda x: (x.shape, str(x.dtype)), cache)


def attention_decode(attention, kwargs, length, *, features=16, heads=4, kv_heads=2,
                     rope=True, dtype=jnp.float32, seed=0):
  """Through the shared base (projections, RoPE, num_kv_heads < num_heads): (full, stepped,
  cache) for x `[2, length, features]`."""
  layer = base.MultiHeadAttention(num_heads=heads, qkv_dim=features, attention=attention,
                                  attention_kwargs=kwargs, causal=True, max_len=length,
                                  num_kv_heads=kv_heads, rope=rope, dtype=dtype)
  x = jnp.asarray(np.random.default_rng(seed).standard_normal((2, length, features)), dtype)
  variables = layer.init(jax.random.key(seed), x)
  full = layer.apply(variables, x)
  cache = layer.init(jax.random.key(seed), x, decode=True)["cache"]

  def apply_step(cache, x_t):
    y, mutated = layer.apply({"params": variables["params"], "cache": cache}, x_t, decode=True,
                             mutable=["cache"])
    return y, mutated["cache"]

  stepped, cache = step_through(apply_step, cache, (x,))
  return full, stepped, cache
