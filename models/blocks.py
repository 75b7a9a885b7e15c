"""The one encoder block every attention variant plugs into (pre-LayerNorm, LRA's layout)."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from models import chunked_ffn
from models import reversible  # a module import: reversible.py builds on FeedForward below
from models.attention.base import MultiHeadAttention
from models.embedding import Embedder

ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu, "silu": nn.silu}  # gelu: tanh form, as LRA's
MLP_KERNEL_INIT = nn.initializers.xavier_uniform()
MLP_BIAS_INIT = nn.initializers.normal(stddev=1e-6)


class FeedForward(nn.Module):
  """Dense(mlp) -> activation -> dropout -> Dense(features) -> dropout (LRA's MlpBlock in
  common_layers.py, with its inits: Xavier-uniform kernels, biases normal(stddev=1e-6))."""
  mlp_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"config.model.activation={self.activation!r}; "
                       f"expected one of {sorted(ACTIVATIONS)}")
    dense = lambda features, name: nn.Dense(features, kernel_init=MLP_KERNEL_INIT,
                                            bias_init=MLP_BIAS_INIT, dtype=self.dtype, name=name)
    h = dense(self.mlp_dim, "in")(x)
    h = ACTIVATIONS[self.activation](h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    h = dense(x.shape[-1], "out")(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class EncoderBlock(nn.Module):
  """x + Dropout(Attention(LN(x))); x + FFN(LN(x)): LRA's TransformerBlock layout.

  One difference from LRA's block: padded positions are set to zero after each block (LRA
  leaves whatever the layers computed there), so no mixer can carry values from padding. With
  softmax attention (padded keys masked, the rest per position) real positions are unchanged;
  pooled vectors differ only where LRA's MEAN pooling averages padding in (see heads.pool).
  """
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
  dtype: Any = jnp.float32
  ffn_chunk_size: int = 0  # Reformer sec. 3: the FFN over this many positions at a time; 0 = off

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    h = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
    h = MultiHeadAttention(num_heads=self.num_heads, qkv_dim=self.qkv_dim,
                           attention=self.attention, attention_kwargs=self.attention_kwargs,
                           causal=self.causal, dropout_rate=self.attention_dropout_rate,
                           max_len=self.max_len, dtype=self.dtype, name="attention")(
                               h, mask, deterministic=deterministic)
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    h = nn.LayerNorm(dtype=self.dtype, name="ffn_norm")(x)
    ffn = FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype, name="ffn")
    x = x + chunked_ffn.apply_in_chunks(ffn, h, self.ffn_chunk_size, deterministic)
    return jnp.where(mask[..., None], x, 0.0)


class Encoder(nn.Module):
  """Embedding, `num_layers` shared-layout blocks and a final LayerNorm.

  Returns `(hidden [b, l(+1), emb_dim], mask)`; with `prepend_cls` position 0 is the CLS token.
  """
  vocab_size: int
  emb_dim: int
  num_heads: int
  num_layers: int
  qkv_dim: int
  mlp_dim: int
  max_len: int
  attention: str = "transformer"
  attention_kwargs: Mapping[str, Any] | None = None
  causal: bool = False
  positions: str = "sinusoidal"
  prepend_cls: bool = False
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  activation: str = "gelu"
  dtype: Any = jnp.float32
  reversible: bool = False  # RevNet residuals, recomputed in the backward pass (Reformer sec. 3)
  ffn_chunk_size: int = 0

  @nn.compact
  def __call__(self, tokens, mask, deterministic=True):
    x, mask = Embedder(self.vocab_size, self.emb_dim, self.max_len, self.positions,
                       self.prepend_cls, self.dropout_rate, self.dtype, name="embed")(
                           tokens, mask, deterministic)
    if self.reversible:
      x = reversible.ReversibleLayers(
          self.num_layers, self.num_heads, self.qkv_dim, self.mlp_dim, self.attention,
          self.attention_kwargs, self.causal, self.max_len + int(self.prepend_cls),
          self.dropout_rate, self.attention_dropout_rate, self.activation,
          self.ffn_chunk_size, dtype=self.dtype, name="reversible")(x, mask, deterministic)
    else:
      for i in range(self.num_layers):
        x = EncoderBlock(self.num_heads, self.qkv_dim, self.mlp_dim, self.attention,
                         self.attention_kwargs, self.causal,
                         self.max_len + int(self.prepend_cls), self.dropout_rate,
                         self.attention_dropout_rate, self.activation, self.dtype,
                         self.ffn_chunk_size, name=f"block_{i}")(x, mask, deterministic)
    x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)
    return x, mask
