"""BigBird attention, ITC form (Zaheer et al. 2020, sec. 2 and appendix D, "blockified").

The sequence is cut into blocks of `block_size`. With n blocks:
  global blocks (ITC: the first ceil(g/2) and last floor(g/2) blocks) attend to every key and
    every query attends to them;
  every other query block attends to the 3 window blocks (itself and its neighbours) and to
    `num_random_blocks` random blocks drawn, per head and per query block, among the blocks
    that are neither in its window nor global (as the paper's `bigbird_block_rand_mask`).
One softmax per query over the union (a block is never counted twice). The random plan is fixed
at trace time by `seed` (the module also folds in its own path, so layers differ, as BigBird's
per-layer seeds do). Keys are gathered block-wise (appendix D, fig. 6): scores are
`[n, B, (3 + g + r) * B]` for the sparse rows and `[g * B, L]` for the global rows, O(L).
"""
from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import blocking, masks
from models.attention.registry import register


def bigbird_plan(n, heads, num_global_blocks, num_random_blocks, seed):
  """The static block plan (numpy): which blocks each query block attends to.

  Returns `(global_ids [g], middle [m], window [m, 3], window_ok [m, 3], random [h, m, r],
  random_ok [h, m, r])`, where `middle` are the non-global query blocks, `*_ok` marks slots
  that are real (out-of-range or global window blocks and missing random blocks are False).
  """
  g = min(num_global_blocks, n)
  first, last = g - g // 2, g // 2
  global_ids = np.concatenate([np.arange(first), np.arange(n - last, n)]).astype(np.int32)
  middle = np.arange(first, n - last, dtype=np.int32)
  is_global = np.isin(np.arange(n), global_ids)
  window = middle[:, None] + np.array([-1, 0, 1])
  window_ok = (window >= 0) & (window < n)
  window_ok &= ~is_global[np.clip(window, 0, n - 1)]
  window = np.clip(window, 0, n - 1).astype(np.int32)
  rng = np.random.RandomState(seed % 2**32)
  random = np.zeros((heads, len(middle), num_random_blocks), np.int32)
  random_ok = np.zeros(random.shape, bool)
  for head in range(heads):
    for row, m in enumerate(middle):
      candidates = np.flatnonzero(~is_global & (np.abs(np.arange(n) - m) > 1))
      chosen = rng.permutation(candidates)[:num_random_blocks]
      random[head, row, :len(chosen)] = chosen
      random_ok[head, row, :len(chosen)] = True
  return global_ids, middle, window, window_ok, random, random_ok


def bigbird_attention(q, k, v, *, block_size=64, num_random_blocks=3, num_global_blocks=2,
                      seed=0, q_mask=None, kv_mask=None, dropout_rate=0.0, dropout_rng=None,
                      deterministic=True):
  """Pure function. q/k/v `[b, l, h, d]` (self-attention), masks bool `[b, l]`."""
  blocking.check_self_attention(q, k, "bigbird")
  if block_size < 1 or num_random_blocks < 0 or num_global_blocks < 0:
    raise ValueError(f"bigbird: block_size={block_size}, num_random_blocks={num_random_blocks},"
                     f" num_global_blocks={num_global_blocks}; expected >= 1, >= 0, >= 0")
  batch, length, heads, depth = q.shape
  block = min(block_size, length)
  q = q / jnp.sqrt(depth).astype(q.dtype)
  q_pad, k_pad, v_pad = (blocking.pad_to_blocks(t, block) for t in (q, k, v))
  qb, kb, vb = (blocking.to_blocks(t, block) for t in (q_pad, k_pad, v_pad))
  n = qb.shape[1]
  valid_flat = blocking.key_validity(kv_mask, batch, length, block)  # [b, n*B]
  valid = blocking.to_blocks(valid_flat, block)  # [b, n, B]
  global_ids, middle, window, window_ok, random, random_ok = bigbird_plan(
      n, heads, num_global_blocks, num_random_blocks, seed)
  rngs = [None, None] if dropout_rng is None else jax.random.split(dropout_rng)
  out_blocks = jnp.zeros_like(qb)

  # Global query blocks attend to every key (ITC).
  if len(global_ids):
    logits = jnp.einsum("bgqhd,bkhd->bghqk", qb[:, global_ids], k_pad)
    weights = blocking.joint_softmax([logits], [valid_flat[:, None, None, None, :]])
    weights, = blocking.dropout(weights, dropout_rate, rngs[0], deterministic)
    out_blocks = out_blocks.at[:, global_ids].set(jnp.einsum("bghqk,bkhd->bgqhd", weights, v_pad))

  if len(middle):
    q_mid = qb[:, middle]  # [b, m, B, h, d]
    m = len(middle)
    logits, allowed, values = [], [], []
    # Window blocks: gathered per query block, [b, m, 3B, h, d].
    k_win, v_win = (t[:, window].reshape(batch, m, 3 * block, heads, depth) for t in (kb, vb))
    win_valid = (valid[:, window] & window_ok[None, :, :, None]).reshape(batch, m, 3 * block)
    logits.append(jnp.einsum("bmqhd,bmkhd->bmhqk", q_mid, k_win))
    allowed.append(win_valid[:, :, None, None, :])
    values.append(lambda w: jnp.einsum("bmhqk,bmkhd->bmqhd", w, v_win))
    # Global keys, shared by all query blocks.
    if len(global_ids):
      k_glob, v_glob = (t[:, global_ids].reshape(batch, -1, heads, depth) for t in (kb, vb))
      glob_valid = valid[:, global_ids].reshape(batch, -1)
      logits.append(jnp.einsum("bmqhd,bkhd->bmhqk", q_mid, k_glob))
      allowed.append(glob_valid[:, None, None, None, :])
      values.append(lambda w: jnp.einsum("bmhqk,bkhd->bmqhd", w, v_glob))
    # Random blocks, a different draw per head: [b, h, m, rB, d].
    if num_random_blocks:
      head_ids = np.arange(heads)[:, None, None]
      k_rand, v_rand = (jnp.swapaxes(t, 2, 3).swapaxes(1, 2)[:, head_ids, random]
                        .reshape(batch, heads, m, -1, depth) for t in (kb, vb))
      rand_valid = (valid[:, random] & random_ok[None, ..., None]).reshape(batch, heads, m, -1)
      logits.append(jnp.einsum("bmqhd,bhmkd->bmhqk", q_mid, k_rand))
      allowed.append(jnp.swapaxes(rand_valid, 1, 2)[:, :, :, None, :])
      values.append(lambda w: jnp.einsum("bmhqk,bhmkd->bmqhd", w, v_rand))
    weights = blocking.joint_softmax(logits, allowed)
    weights = blocking.dropout(weights, dropout_rate, rngs[1], deterministic)
    out_mid = sum(value(w) for value, w in zip(values, weights))
    out_blocks = out_blocks.at[:, middle].set(out_mid)

  out = blocking.from_blocks(out_blocks)[:, :length]
  return masks.zero_padded_queries(out, q_mask)


@register("bigbird", causal=False, cross=False)
class BigBirdAttention(nn.Module):
  """Defaults as BigBird / LRA: blocks of 64, 3 random blocks, first and last block global."""
  block_size: int = 64
  num_random_blocks: int = 3
  num_global_blocks: int = 2
  seed: int = 0
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    layer_seed = self.seed + zlib.crc32("/".join(self.path).encode())  # a fixed plan per layer
    return bigbird_attention(
        q, k, v, block_size=self.block_size, num_random_blocks=self.num_random_blocks,
        num_global_blocks=self.num_global_blocks, seed=layer_seed, q_mask=q_mask,
        kv_mask=kv_mask, dropout_rate=self.dropout_rate, dropout_rng=rng,
        deterministic=deterministic)
