"""Reversible residual layers (RevNet, Gomez et al. 2017; Kitaev et al. 2020, "Reformer",
sec. 3).

Two streams, x1 = x2 = x at the start; every layer computes
    y1 = x1 + F(x2)     F = Dropout(Attention(LayerNorm(.)))
    y2 = x2 + G(y1)     G = FFN(LayerNorm(.)) (chunked with `ffn_chunk_size`, sec. 3)
and the stack returns (y1 + y2) / 2 (the paper concatenates the two streams before its output
layer; averaging keeps the encoder's width for the shared heads).

`reversible_stack` is a `jax.custom_vjp`: the forward pass keeps only the last layer's
outputs; the backward pass walks the layers in reverse, recomputing x2 = y2 - G(y1) and
x1 = y1 - F(x2) together with their vjps, so activation memory does not grow with depth.
Dropout draws use one key per branch and layer, so the recomputation sees the same masks.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks, chunked_ffn
from models.attention.base import MultiHeadAttention


def plain_stack(f: Callable, g: Callable, params, x1, x2, aux):
  """The same two-stream layers under ordinary autodiff (keeps every activation)."""
  for i, (f_params, g_params) in enumerate(params):
    x1 = x1 + f(i, f_params, x2, aux)
    x2 = x2 + g(i, g_params, x1, aux)
  return x1, x2


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def reversible_stack(f: Callable, g: Callable, params, x1, x2, aux):
  """Runs the layers `params = ((f_params, g_params), ...)`; `f(i, f_params, x, aux)` and
  `g(i, g_params, x, aux)` are pure. `aux` (masks, rng keys) gets no gradient."""
  return plain_stack(f, g, params, x1, x2, aux)


def _reversible_fwd(f, g, params, x1, x2, aux):
  y1, y2 = plain_stack(f, g, params, x1, x2, aux)
  return (y1, y2), (params, y1, y2, aux)  # no per-layer activations are kept


def _reversible_bwd(f, g, residuals, cotangents):
  params, y1, y2, aux = residuals
  dy1, dy2 = cotangents
  grads = [None] * len(params)
  for i in reversed(range(len(params))):
    f_params, g_params = params[i]
    g_out, g_vjp = jax.vjp(lambda p, x: g(i, p, x, aux), g_params, y1)
    x2 = y2 - g_out                          # invert y2 = x2 + G(y1)
    dg_params, dg_y1 = g_vjp(dy2)
    dy1 = dy1 + dg_y1                        # total gradient of y1 (= of x1)
    f_out, f_vjp = jax.vjp(lambda p, x: f(i, p, x, aux), f_params, x2)
    x1 = y1 - f_out                          # invert y1 = x1 + F(x2)
    df_params, df_x2 = f_vjp(dy1)
    dy2 = dy2 + df_x2                        # total gradient of x2
    grads[i] = (df_params, dg_params)
    y1, y2 = x1, x2
  zero_aux = jax.tree_util.tree_map(_zero_cotangent, aux)
  return tuple(grads), dy1, dy2, zero_aux


def _zero_cotangent(x):
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return jnp.zeros(x.shape, jax.dtypes.float0)  # bool masks, int / key data


reversible_stack.defvjp(_reversible_fwd, _reversible_bwd)


class AttentionBranch(nn.Module):
  """F: Dropout(Attention(LayerNorm(x))), zero at padded positions."""
  num_heads: int
  qkv_dim: int
  attention: str = "transformer"
  attention_kwargs: Mapping[str, Any] | None = None
  causal: bool = False
  max_len: int | None = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  # The branch is applied as a top-level module, so its path is empty; naming the attention
  # after the layer gives each layer its own path, from which mixers with fixed randomness
  # (Performer's features, Reformer's evaluation hashes) draw different values per layer.
  layer: int = 0
  attention_options: Mapping[str, Any] | None = None  # MultiHeadAttention fields

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    h = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
    h = MultiHeadAttention(num_heads=self.num_heads, qkv_dim=self.qkv_dim,
                           attention=self.attention, attention_kwargs=self.attention_kwargs,
                           causal=self.causal, dropout_rate=self.attention_dropout_rate,
                           max_len=self.max_len, dtype=self.dtype,
                           **dict(self.attention_options or {}),
                           name=f"attention_{self.layer}")(
                               h, mask, deterministic=deterministic)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return jnp.where(mask[..., None], h, 0.0)


class FeedForwardBranch(nn.Module):
  """G: FFN(LayerNorm(x)), applied `ffn_chunk_size` positions at a time, zero at padding."""
  mlp_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  ffn_chunk_size: int = 0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    h = nn.LayerNorm(dtype=self.dtype, name="ffn_norm")(x)
    ffn = blocks.FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype,
                             name="ffn")
    h = chunked_ffn.apply_in_chunks(ffn, h, self.ffn_chunk_size, deterministic)
    return jnp.where(mask[..., None], h, 0.0)


class ReversibleLayers(nn.Module):
  """`num_layers` reversible encoder layers: `(x [b, l, f], mask [b, l]) -> [b, l, f]`.

  Parameters live under `attention_{i}` / `ffn_{i}`. `recompute=False` runs the same
  two-stream maths with ordinary autodiff (stores activations; for tests and debugging).
  """
  num_layers: int
  num_heads: int
  qkv_dim: int
  mlp_dim: int
  attention: str = "transformer"
  attention_kwargs: Mapping[str, Any] | None = None
  causal: bool = False
  max_len: int | None = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation: str = "gelu"
  ffn_chunk_size: int = 0
  recompute: bool = True
  dtype: Any = jnp.float32
  attention_options: Mapping[str, Any] | None = None  # MultiHeadAttention fields

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    f_defs = [AttentionBranch(self.num_heads, self.qkv_dim, self.attention,
                              self.attention_kwargs, self.causal, self.max_len,
                              self.dropout_rate, self.attention_dropout_rate, self.dtype,
                              layer=i, attention_options=self.attention_options, parent=None) for i in range(self.num_layers)]
    g_def = FeedForwardBranch(self.mlp_dim, self.activation, self.dropout_rate,
                              self.ffn_chunk_size, self.dtype, parent=None)
    params = tuple(
        (self.param(f"attention_{i}", lambda rng, i=i: f_defs[i].init(rng, x, mask)["params"]),
         self.param(f"ffn_{i}", lambda rng: g_def.init(rng, x, mask)["params"]))
        for i in range(self.num_layers))
    keys = None
    if not deterministic:
      keys = jax.random.split(self.make_rng("dropout"), 2 * self.num_layers)

    def branch(definitions, offset):
      def apply(i, branch_params, h, aux):
        mask, keys = aux
        rngs = {} if keys is None else {"dropout": keys[2 * i + offset]}
        return definitions[i].apply({"params": branch_params}, h, mask, deterministic, rngs=rngs)
      return apply

    run = reversible_stack if self.recompute else plain_stack
    g_defs = [g_def] * self.num_layers
    y1, y2 = run(branch(f_defs, 0), branch(g_defs, 1), params, x, x, (mask, keys))
    return jnp.where(mask[..., None], (y1 + y2) / 2, 0.0)
