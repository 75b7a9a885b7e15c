"""Chunked feed-forward (Kitaev et al. 2020, "Reformer", sec. 3 "Chunking").

The position-wise FFN is applied to `chunk_size` positions at a time with `nn.scan` (one
chunk per step, the same parameters every step) and each step is rematerialised, so the
`[b, l, mlp_dim]` hidden activation never exists at once, in the forward or the backward
pass. Results equal the unchunked FFN (dropout draws differ per chunk, as they may).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def _ffn_step(ffn, carry, chunk, deterministic):
  return carry, ffn(chunk, deterministic=deterministic)


def apply_in_chunks(ffn: nn.Module, x, chunk_size: int, deterministic: bool = True):
  """`ffn(x, deterministic=...)` on `[b, l, f]` in chunks of `chunk_size` positions.

  `ffn` is a (child) module acting position-wise; 0 (or >= l) applies it unchunked.
  Its parameters keep their usual names: scan broadcasts them to every step.
  """
  if chunk_size < 0:
    raise ValueError(f"config.model.ffn_chunk_size={chunk_size}; expected >= 0 (0 = off)")
  batch, length, features = x.shape
  if chunk_size == 0 or chunk_size >= length:
    return ffn(x, deterministic=deterministic)
  chunks = -(-length // chunk_size)
  x = jnp.pad(x, [(0, 0), (0, chunks * chunk_size - length), (0, 0)])
  xs = x.reshape(batch, chunks, chunk_size, features).swapaxes(0, 1)  # [n, b, c, f]
  scan = nn.scan(nn.remat(_ffn_step, static_argnums=(3,)), variable_broadcast="params",
                 split_rngs={"params": False, "dropout": True}, in_axes=(0, nn.broadcast), out_axes=0,
                 length=chunks)
  _, ys = scan(ffn, None, xs, deterministic)
  return ys.swapaxes(0, 1).reshape(batch, chunks * chunk_size, -1)[:, :length]
