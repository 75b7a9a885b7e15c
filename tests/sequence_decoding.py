"""Shared checks of incremental decoding for the sequence mixers (models/attention/decoding.py):
stepping token by token, jitted, equals the causal full forward; cache sizes."""
import jax
import jax.numpy as jnp
import numpy as np


def decode_steps(module, params, x):
  """Feeds x `[b, L, f]` one token at a time through a jitted decode step; returns
  (outputs `[b, L, f]`, the full forward of the cache-creating call, the final cache)."""
  first, variables = module.apply({"params": params}, x, decode=True, mutable=["cache"])
  cache = variables["cache"]
  step = jax.jit(lambda c, token: module.apply({"params": params, "cache": c}, token,
                                               decode=True, mutable=["cache"]))
  outputs = []
  for t in range(x.shape[1]):
    y, variables = step(cache, x[:, t:t + 1])
    cache = variables["cache"]
    outputs.append(np.asarray(y))
  return np.concatenate(outputs, axis=1), np.asarray(first), cache


def assert_decodes(module, params, x, atol=1e-4):
  """Step-by-step == the causal full forward (decode=False), to atol; returns the max error."""
  full = np.asarray(module.apply({"params": params}, x))
  stepped, first, cache = decode_steps(module, params, x)
  np.testing.assert_allclose(first, full, atol=1e-6, rtol=1e-6)  # the init call: full forward
  assert int(cache_index(cache)) == x.shape[1]
  np.testing.assert_allclose(stepped, full, atol=atol, rtol=atol)
  return float(np.abs(stepped - full).max())


def cache_index(cache):
  leaves = [v for path, v in jax.tree_util.tree_flatten_with_path(cache)[0]
            if getattr(path[-1], "key", None) == "index"]
  assert len(leaves) == 1, leaves
  return leaves[0]


def cache_shapes(module, params, features, length, batch=2):
  """{path: shape} of the cache created for inputs of `length` tokens."""
  x = jnp.zeros((batch, length, features), jnp.float32)
  _, variables = module.apply({"params": params}, x, decode=True, mutable=["cache"])
  return {jax.tree_util.keystr(p): v.shape
          for p, v in jax.tree_util.tree_flatten_with_path(variables["cache"])[0]}
