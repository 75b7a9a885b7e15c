"""Block helpers shared by the block-sparse variants (local, sparse_transformer, longformer,
bigbird).

A length-L sequence is zero-padded to `n * block` positions and viewed as `[b, n, block, ...]`.
A variant then gathers, for every query block, the few key blocks its pattern needs, scores
them with einsums and normalises all key groups of a query with one softmax (`joint_softmax`).
No helper here ever builds an `[L, L]` array: scores are `[..., block, keys per block]`.
Internal padding is masked through `key_validity` and sliced off by the caller.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from models.attention import masks


def num_blocks(length: int, block: int) -> int:
  return -(-length // block)


def pad_to_blocks(x, block: int):
  """Pads axis 1 of `x` with zeros (False for bool) up to a multiple of `block`."""
  extra = num_blocks(x.shape[1], block) * block - x.shape[1]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[1] = (0, extra)
  return jnp.pad(x, widths)


def to_blocks(x, block: int):
  """`[b, n * block, ...]` -> `[b, n, block, ...]`."""
  return x.reshape(x.shape[0], x.shape[1] // block, block, *x.shape[2:])


def from_blocks(x):
  """`[b, n, block, ...]` -> `[b, n * block, ...]`."""
  return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def key_validity(kv_mask, batch: int, length: int, block: int):
  """Bool `[b, n * block]`: True at real keys (kv_mask, or all positions < length)."""
  if kv_mask is None:
    kv_mask = jnp.ones((batch, length), bool)
  return pad_to_blocks(kv_mask.astype(bool), block)


def block_positions(num: int, block: int):
  """Int `[1, n, block]`: the absolute position of every slot of every block."""
  return jnp.arange(num * block).reshape(1, num, block)


def shift_blocks(xb, offset: int, fill):
  """Block m of the result is block m + offset of `xb` (axis 1); `fill` where out of range."""
  n = xb.shape[1]
  if offset == 0:
    return xb
  if abs(offset) >= n:
    return jnp.full_like(xb, fill)
  pad = jnp.full_like(xb[:, :abs(offset)], fill)
  if offset > 0:
    return jnp.concatenate([xb[:, offset:], pad], axis=1)
  return jnp.concatenate([pad, xb[:, :offset]], axis=1)


def neighbour_blocks(xb, offsets, fill=0):
  """`[b, n, len(offsets) * block, ...]`: blocks m + o (o in offsets) side by side."""
  return jnp.concatenate([shift_blocks(xb, o, fill) for o in offsets], axis=2)


def check_self_attention(q, k, name: str):
  if q.shape[1] != k.shape[1]:
    raise ValueError(f"attention {name!r} is self-attention only: query length {q.shape[1]} "
                     f"!= key length {k.shape[1]}")


def joint_softmax(logits, allowed):
  """One softmax over several key groups of the same queries.

  `logits`: list of `[..., q, k_i]`; `allowed`: list of bool masks broadcastable to them.
  A query with no allowed key at all gets zero weights (not an average of masked keys).
  """
  neg = masks.big_negative(logits[0].dtype)
  masked = [jnp.where(a, x, neg) for x, a in zip(logits, allowed)]
  top = masked[0].max(axis=-1, keepdims=True)
  for x in masked[1:]:
    top = jnp.maximum(top, x.max(axis=-1, keepdims=True))
  top = jax.lax.stop_gradient(top)
  exps = [jnp.where(a, jnp.exp(x - top), 0.0) for x, a in zip(masked, allowed)]
  total = sum(e.sum(axis=-1, keepdims=True) for e in exps)
  total = jnp.where(total > 0, total, 1.0)
  return [e / total for e in exps]


def dropout(weights, rate: float, rng, deterministic: bool):
  """Attention-weight dropout on each group of `joint_softmax` weights."""
  if deterministic or rate <= 0.0:
    return weights
  rngs = jax.random.split(rng, len(weights))
  return [masks.dropout_weights(w, rate, key) for w, key in zip(weights, rngs)]
