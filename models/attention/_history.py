"""Step helpers for incremental decoding (models/attention/decoding.py) of the sequence mixers.

A long convolution y_t = sum_{s <= t} K_s u_{t-s} has no recurrent form in the papers of
long_conv, SGConv or Hyena: decoding keeps the past inputs (a "history" cache `[b, L, C]`, L the
most tokens decoded) and computes each step's output as the dot product of the kernel with the
reversed history, O(L) per token. A short FIR (H3's shift SSM, Hyena's short conv, Mega's
truncated EMA) keeps only its last taps (`push_window`), a constant-size state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def write(history, token, index):
  """history `[b, L, C]` with `token` `[b, C]` written at position `index` (traced int32)."""
  return jax.lax.dynamic_update_slice_in_dim(history, token[:, None].astype(history.dtype),
                                             index, axis=1)


def causal_dot(history, kernel, index):
  """sum_{j <= index} kernel[index - j] * history[:, j] (the causal convolution's output at
  position `index`). history `[b, L, C]`, kernel `[L, C]` (lag 0..L-1). Returns float32 `[b, C]`;
  positions after `index` are ignored whatever they hold."""
  length = history.shape[1]
  lags = index - jnp.arange(length)
  taps = jnp.where((lags >= 0)[:, None], kernel[jnp.clip(lags, 0, length - 1)], 0.0)
  return jnp.einsum("blc,lc->bc", history.astype(jnp.float32), taps.astype(jnp.float32))


def push_window(window, token):
  """A FIR's last taps: `[b, K, C]` (oldest first) shifted by one, `token` `[b, C]` last."""
  return jnp.concatenate([window[:, 1:], token[:, None].astype(window.dtype)], axis=1)
