"""The one encoder block every mixer plugs into: LRA's pre-LayerNorm Transformer block by
default; the block options of the state-space papers' recipes (post-norm, BatchNorm, a GLU output
stage instead of the feed-forward) are config fields of the same block, not copied encoders."""
from __future__ import annotations

import functools
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
NORMS = ("layer", "batch")
FFNS = ("mlp", "glu", "half_glu1", "half_glu2", "none")


def check_block_options(norm: str, ffn: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"config.model.norm={norm!r}; expected one of {NORMS}")
  if ffn not in FFNS:
    raise ValueError(f"config.model.ffn={ffn!r}; expected one of {FFNS}")


def check_remat(remat: bool, reversible: bool) -> None:
  if remat and reversible:
    raise ValueError("config.model.remat=True with config.model.reversible=True: reversible "
                     "layers already recompute their activations in the backward pass; set "
                     "one of them")


def normalize(kind: str, x, mask, deterministic: bool, dtype, name: str):
  """LayerNorm, or BatchNorm over the batch's real tokens (the S4/S5 recipes' `norm: batch`),
  as a submodule `name` of the calling module (call it inside a compact method).

  BatchNorm's statistics skip padded positions (flax's `mask`), so padding never moves a real
  token's output; evaluation uses the running averages (momentum 0.9 = PyTorch's 0.1, as the S4
  repo's BatchNorm1d and S5's flax BatchNorm), kept in the `batch_stats` collection."""
  if kind == "layer":
    return nn.LayerNorm(dtype=dtype, name=name)(x)
  return nn.BatchNorm(use_running_average=deterministic, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, name=name)(x, mask=mask[..., None])


class OutputStage(nn.Module):
  """The mixer branch's output stage where the recipe has no feed-forward sublayer (`y` is the
  mixer's output; the block's residual dropout follows):
    glu        dropout(act(y)) -> Dense(2d) -> GLU: a * sigmoid(b)  (S4 repo: postact='glu')
    half_glu1  h = dropout(act(y)); h * sigmoid(Dense(h))          (S5 repo, SequenceLayer)
    half_glu2  h = dropout(act(y)); y * sigmoid(Dense(h))          (S5 repo, SequenceLayer)
    mlp, none  y unchanged ("mlp": a feed-forward sublayer follows; "none": nothing)."""
  kind: str
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, deterministic=True):
    if self.kind in ("mlp", "none"):
      return y
    h = nn.Dropout(self.dropout_rate)(ACTIVATIONS[self.activation](y), deterministic=deterministic)
    features = y.shape[-1]
    if self.kind == "glu":
      a, b = jnp.split(nn.Dense(2 * features, dtype=self.dtype, name="glu")(h), 2, axis=-1)
      return a * nn.sigmoid(b)
    gate = nn.sigmoid(nn.Dense(features, dtype=self.dtype, name="gate")(h))
    return (h if self.kind == "half_glu1" else y) * gate


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
  """x + Dropout(Attention(LN(x))); x + FFN(LN(x)): LRA's TransformerBlock layout (the default).

  Options (config.model): `norm` "batch" for BatchNorm; `prenorm=False` for post-norm,
  x = Norm(x + Dropout(f(x))); `ffn` other than "mlp": no feed-forward sublayer, and the mixer
  branch ends in that OutputStage instead.

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
  norm: str = "layer"
  prenorm: bool = True
  ffn: str = "mlp"

  @nn.compact
  def __call__(self, x, mask, deterministic=True):
    check_block_options(self.norm, self.ffn)
    norm = lambda name: functools.partial(normalize, self.norm, dtype=self.dtype, name=name)
    h = norm("attention_norm")(x, mask, deterministic) if self.prenorm else x
    h = MultiHeadAttention(num_heads=self.num_heads, qkv_dim=self.qkv_dim,
                           attention=self.attention, attention_kwargs=self.attention_kwargs,
                           causal=self.causal, dropout_rate=self.attention_dropout_rate,
                           max_len=self.max_len, dtype=self.dtype, name="attention")(
                               h, mask, deterministic=deterministic)
    h = OutputStage(self.ffn, self.activation, self.dropout_rate, self.dtype,
                    name="output_stage")(h, deterministic)
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    if not self.prenorm:
      x = norm("attention_norm")(x, mask, deterministic)
    if self.ffn == "mlp":
      h = norm("ffn_norm")(x, mask, deterministic) if self.prenorm else x
      ffn = FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype, name="ffn")
      x = x + chunked_ffn.apply_in_chunks(ffn, h, self.ffn_chunk_size, deterministic)
      if not self.prenorm:
        x = norm("ffn_norm")(x, mask, deterministic)
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
  norm: str = "layer"     # block options: see EncoderBlock
  prenorm: bool = True    # the final norm is there only with pre-norm (as LRA's and S4's)
  ffn: str = "mlp"
  # Rematerialisation (gradient checkpointing, Chen et al. 2016): each block is wrapped in
  # nn.remat, so the backward pass recomputes its activations from its input and only the
  # blocks' inputs are kept (about one more forward pass of compute).
  remat: bool = False

  @nn.compact
  def __call__(self, tokens, mask, deterministic=True):
    check_block_options(self.norm, self.ffn)
    check_remat(self.remat, self.reversible)
    if self.reversible and (self.norm, self.prenorm, self.ffn) != ("layer", True, "mlp"):
      raise ValueError("config.model.reversible=True has LRA's block only (norm='layer', "
                       f"prenorm=True, ffn='mlp'); got norm={self.norm!r}, "
                       f"prenorm={self.prenorm}, ffn={self.ffn!r}")
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
      # `deterministic` (argument 3, counting self) is static under remat: it selects code paths.
      block = nn.remat(EncoderBlock, static_argnums=(3,)) if self.remat else EncoderBlock
      for i in range(self.num_layers):
        x = block(self.num_heads, self.qkv_dim, self.mlp_dim, self.attention,
                  self.attention_kwargs, self.causal,
                  self.max_len + int(self.prepend_cls), self.dropout_rate,
                  self.attention_dropout_rate, self.activation, self.dtype,
                  self.ffn_chunk_size, self.norm, self.prenorm, self.ffn,
                  name=f"block_{i}")(x, mask, deterministic)
    if self.prenorm:
      x = normalize(self.norm, x, mask, deterministic, self.dtype, "final_norm")
    return x, mask
