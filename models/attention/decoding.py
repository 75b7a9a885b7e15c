"""Incremental decoding's shared protocol: the Flax "cache" collection (as flax's own
`MultiHeadDotProductAttention(decode=True)`).

A mixer registered with `decode=...` (registry.py) takes `decode=True` in its call:
  * first call with decode=True (the cache is not yet initialised: `model.init(..., decode=True)`
    over a `[b, L]` batch, L = the most tokens it will decode): it creates its cache variables
    sized for that (`self.variable("cache", ...)`) and returns the ordinary full forward;
  * every later call (`model.apply({..., "cache": c}, ..., decode=True, mutable=["cache"])`)
    gets ONE token (`[b, 1, ...]`) at the position its cache's `index` holds, returns that
    token's output and advances the cache.
Stepping through a sequence token by token equals the causal full forward over it (all tokens
real), which tests/test_decoding.py checks for every variant that decodes.

Key/value heads: in decode mode a qkv mixer gets k and v with the base's `num_kv_heads` heads
(MQA/GQA: the cache keeps only those); `repeat_kv` gives them the query heads where needed.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

INDEX = "index"


def repeat_kv(x, heads: int):
  """`[b, l, kv_heads, d]` -> `[b, l, heads, d]`: query head i reads key/value head
  i // (heads / kv_heads), as the base's grouped heads."""
  kv_heads = x.shape[2]
  if kv_heads == heads:
    return x
  if heads % kv_heads:
    raise ValueError(f"{kv_heads} key/value heads do not divide {heads} query heads")
  return jnp.repeat(x, heads // kv_heads, axis=2)


def decode_index(module: nn.Module):
  """(stepping, index) for a module in decode mode: `stepping` is False on the call that
  creates the cache (the full forward); `index` is the position of this call's token (an int32
  scalar, traced), advanced by one for the next call. Call it once per call."""
  stepping = module.has_variable("cache", INDEX)
  var = module.variable("cache", INDEX, lambda: jnp.zeros((), jnp.int32))
  index = var.value
  if stepping:
    var.value = index + 1
  return stepping, index


def check_one_token(x, name: str) -> None:
  if x.shape[1] != 1:
    raise ValueError(f"{name}: decode=True with an initialised cache takes one token at a time; "
                     f"got length {x.shape[1]}")
