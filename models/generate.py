"""Incremental decoding with the models of models/decoder.py: the cache (Flax "cache"
collection; protocol in models/attention/decoding.py), step-by-step logits, and `generate`.

    cache = init_cache(model, params, batch_size, length)        # every layer's state
    logits, cache = step(model, params, cache, tokens[:, t:t+1])  # one token -> its logits
    out = generate(model, params, prompt, num_tokens)             # greedy or sampled

An `EncoderDecoder` takes `context=(encoder output, its mask)` (from `encode`) in each call.
Every call is jit-able; `generate` runs its loop as one `lax.scan`.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from models.decoder import EncoderDecoder


def _apply(model, variables, tokens, context, **kwargs):
  mask = jnp.ones(tokens.shape, bool)
  if isinstance(model, EncoderDecoder):
    if context is None:
      raise ValueError("an encoder-decoder decodes given context=(encoder output, mask)")
    return model.apply(variables, tokens, mask, *context, decode=True,
                       method=EncoderDecoder.decode, **kwargs)
  out = model.apply(variables, {"inputs": tokens, "mask": mask}, decode=True, **kwargs)
  if isinstance(out[0], tuple):  # DecoderLM returns ((logits, aux), variables)
    return out[0][0], out[1]
  return out


def encode(model: EncoderDecoder, params, inputs, mask):
  """The encoder's output and mask, the `context` of an encoder-decoder's decoding calls."""
  return model.apply({"params": params}, inputs, mask, method=EncoderDecoder.encode)


def init_cache(model, params, batch_size: int, length: int, context=None) -> Any:
  """The decoding state of every layer for up to `length` tokens (a full-length forward in
  decode mode creates it; its values are the initial state)."""
  tokens = jnp.zeros((batch_size, length), jnp.int32)
  _, variables = _apply(model, {"params": params}, tokens, context, mutable=["cache"])
  return variables["cache"]


def step(model, params, cache, tokens, context=None):
  """One token per row (`tokens` `[b, 1]`) -> (its next-token logits `[b, vocab]`, cache)."""
  logits, variables = _apply(model, {"params": params, "cache": cache}, tokens, context,
                             mutable=["cache"])
  return logits[:, 0], variables["cache"]


def cache_bytes(cache) -> int:
  """Bytes the decoding state holds (every array of the cache collection)."""
  return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(cache)))


def teacher_forced_logits(model, params, tokens, context=None):
  """Feeds `tokens` `[b, l]` one at a time through the cache -> logits `[b, l, vocab]`: what
  the full forward pass computes, token by token (tests/test_decoding.py)."""
  cache = init_cache(model, params, tokens.shape[0], tokens.shape[1], context)

  def body(cache, token):
    logits, cache = step(model, params, cache, token[:, None], context)
    return cache, logits

  _, logits = jax.lax.scan(body, cache, tokens.T)
  return jnp.swapaxes(logits, 0, 1)


def generate(model, params, prompt, num_tokens: int, *, temperature: float = 0.0, rng=None,
             context=None, length: int | None = None):
  """`prompt` `[b, p]` (p >= 1) followed by `num_tokens` new tokens -> `[b, p + num_tokens]`.
  Greedy with temperature 0, else sampled from softmax(logits / temperature) with `rng`. The
  prompt is fed token by token through the same cache. `length` (>= p + num_tokens; default
  exactly that) sizes the cache."""
  batch, p = prompt.shape
  total = p + num_tokens
  length = length or total
  if p < 1 or length < total:
    raise ValueError(f"prompt length {p} (>= 1 needed) + {num_tokens} new tokens must fit "
                     f"the cache length {length}")
  if temperature > 0 and rng is None:
    raise ValueError("sampling (temperature > 0) needs an rng")
  cache = init_cache(model, params, batch, length, context)
  tokens = jnp.zeros((batch, total), jnp.int32).at[:, :p].set(prompt)

  def body(carry, t):
    tokens, cache = carry
    logits, cache = step(model, params, cache, jax.lax.dynamic_slice_in_dim(tokens, t, 1, 1),
                         context)
    if temperature > 0:
      chosen = jax.random.categorical(jax.random.fold_in(rng, t), logits / temperature)
    else:
      chosen = logits.argmax(-1)
    forced = jax.lax.dynamic_slice_in_dim(tokens, t + 1, 1, 1)[:, 0]
    nxt = jnp.where(t + 1 < p, forced, chosen.astype(jnp.int32))
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, nxt[:, None], t + 1, 1)
    return (tokens, cache), None

  (tokens, _), _ = jax.lax.scan(body, (tokens, cache), jnp.arange(total - 1))
  return tokens
