"""Position information the shared base (`base.py`) adds around a mixer: rotary embeddings on
q and k, and additive score biases (ALiBi, T5's relative position bias). Pure functions.

Positions are the tokens' indices 0..L-1 in their own sequence. Where queries and keys differ
in length, causal queries are aligned to the keys' end (the convention of
`masks.causal_bias`), so that query i and key j of a decoder are at positions i + lk - lq and
j; non-causal (cross) attention keeps each sequence's own positions (`query_positions`).

A score bias is a function `fn(q_pos, k_pos) -> [h, lq, lk]` float32 of two int position
vectors, so a blocked mixer evaluates it one block at a time and never holds an `[L, L]` bias.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def query_positions(lq: int, lk: int, causal: bool):
  """Int `[lq]`: the queries' positions (aligned to the keys' end when causal)."""
  return jnp.arange(lq) + (lk - lq if causal else 0)


def rotate(x, positions, base: float = 10000.0):
  """Rotary position embedding (Su et al. 2021, RoFormer eq. 34) of `x` `[b, l, h, d]` at
  int `positions` `[l]`: channel pair i is rotated by the angle position * theta_i,
  theta_i = base^(-2i/d), i = 0..d/2-1.

  Pairing: the half-split one (GPT-NeoX's; pair i = channels (i, i + d/2)) rather than the
  paper's adjacent channels (2i, 2i+1). The two differ only by a fixed permutation of the
  channels, the same for q and k, which the learned q/k projections absorb (a permutation of
  their output columns), so they are the same model; the half split is two slices and a
  concatenation where the interleaved one needs strided gathers. Computed in float32 (angles
  up to L radians lose their low bits in bfloat16) and cast back to x's dtype.
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"rope needs an even head dimension (qkv_dim / num_heads), got {d}")
  theta = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)          # [d/2]
  angles = positions.astype(jnp.float32)[:, None] * theta.astype(np.float32)  # [l, d/2]
  cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]  # [l, 1, d/2]
  x32 = x.astype(jnp.float32)
  x1, x2 = x32[..., :d // 2], x32[..., d // 2:]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def alibi_slopes(num_heads: int) -> np.ndarray:
  """ALiBi's head slopes (Press et al. 2022, sec. 3): for H a power of two the geometric
  sequence 2^(-8/H), 2^(-16/H), ..., 2^(-8); otherwise the slopes of the closest smaller power
  of two P, followed by every other slope of 2P (odd ones, 2^(-4/P), 2^(-12/P), ...) until
  there are H (the rule of the paper's released code, ofirpress/attention_with_linear_biases).
  """
  def power_of_two(n):
    return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]
  p = 2 ** int(math.floor(math.log2(num_heads)))
  slopes = power_of_two(p)
  if p != num_heads:
    slopes += power_of_two(2 * p)[0::2][:num_heads - p]
  return np.asarray(slopes, np.float32)


def alibi_bias(num_heads: int):
  """fn(q_pos, k_pos) -> `[h, lq, lk]`: -m_h |i - j| (Press et al. 2022, eq. in sec. 3). Under
  a causal mask only j <= i is seen, where this is the paper's -m_h (i - j)."""
  slopes = alibi_slopes(num_heads)[:, None, None]

  def fn(q_pos, k_pos):
    distance = jnp.abs(q_pos[:, None] - k_pos[None, :]).astype(jnp.float32)
    return -slopes * distance[None]

  return fn


def t5_bucket(relative, *, bidirectional: bool, num_buckets: int = 32,
              max_distance: int = 128):
  """T5's bucket of relative position `relative` = key position - query position (Raffel et
  al. 2020, sec. 2.1; the rule of mesh-tensorflow's and t5x's `_relative_position_bucket`).

  Bidirectional: half of the buckets for keys at or before the query, half (offset by
  num_buckets/2) for keys after it. Causal: keys after the query all fall in bucket 0 (they
  are masked anyway). Within a half of B buckets, a distance n < B/2 has its own bucket; larger
  distances share log-spaced buckets B/2 + floor(log(n / (B/2)) / log(max_distance / (B/2))
  * B/2), capped at B - 1, so every distance >= max_distance shares the last bucket.
  """
  distance = -relative  # > 0: the key is before the query
  bucket = jnp.zeros_like(relative)
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (distance < 0).astype(relative.dtype) * num_buckets
    distance = jnp.abs(distance)
  else:
    distance = jnp.maximum(distance, 0)
  exact = num_buckets // 2
  # float32 epsilon inside the log, as the reference: log(0) never happens (n >= exact there)
  # and n = exact lands exactly on bucket `exact`.
  scaled = (jnp.log(distance.astype(jnp.float32) / exact + np.finfo(np.float32).eps)
            / math.log(max_distance / exact) * (num_buckets - exact))
  large = jnp.minimum(exact + scaled.astype(relative.dtype), num_buckets - 1)
  return bucket + jnp.where(distance < exact, distance, large)


def t5_bias(table, *, bidirectional: bool, max_distance: int = 128):
  """fn(q_pos, k_pos) -> `[h, lq, lk]`: `table[bucket(k - q)]` for the learned `table`
  `[num_buckets, h]` (T5's relative position bias; each head its own scalar per bucket)."""
  num_buckets = table.shape[0]

  def fn(q_pos, k_pos):
    relative = (k_pos[None, :] - q_pos[:, None]).astype(jnp.int32)
    buckets = t5_bucket(relative, bidirectional=bidirectional, num_buckets=num_buckets,
                        max_distance=max_distance)
    return jnp.moveaxis(table.astype(jnp.float32)[buckets], -1, 0)

  return fn
