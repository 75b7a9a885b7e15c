"""The one encoder block every mixer plugs into: LRA's pre-LayerNorm Transformer block by
default; the block options of the state-space papers' recipes (post-norm, BatchNorm, a GLU output
stage instead of the feed-forward), the gated feed-forward (GEGLU / SwiGLU), ReZero residuals and
the head and position options of the attention (MQA/GQA, RoPE, ALiBi/T5 bias, qk-norm: passed to
`MultiHeadAttention` as `attention_options`) are config fields of the same block, not copied
encoders."""
from __future__ import annotations

import functools
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from models import chunked_ffn
from models import reversible  # a module import: reversible.py builds on FeedForward below
from models.attention import decoding, registry
from models.attention.base import MultiHeadAttention
from models.embedding import Embedder

ACTIVATIONS = {"gelu": nn.gelu, "relu": nn.relu, "silu": nn.silu}  # gelu: tanh form, as LRA's
MLP_KERNEL_INIT = nn.initializers.xavier_uniform()
MLP_BIAS_INIT = nn.initializers.normal(stddev=1e-6)
NORMS = ("layer", "batch", "none")
# Feed-forward sublayers ("mlp": LRA's; "gated": Shazeer 2020's GLU variants) and the mixer
# branch's output stages that replace the feed-forward sublayer (OutputStage).
FEED_FORWARDS = ("mlp", "gated")
FFNS = FEED_FORWARDS + ("glu", "half_glu1", "half_glu2", "none")


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
  if kind == "none":  # no normalisation (ReZero's Transformer, Bachlechner et al. 2020)
    return x
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
    mlp, gated, none  y unchanged (a feed-forward sublayer follows; "none": nothing)."""
  kind: str
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, y, deterministic=True):
    if self.kind in FEED_FORWARDS + ("none",):
      return y
    h = nn.Dropout(self.dropout_rate)(ACTIVATIONS[self.activation](y), deterministic=deterministic)
    features = y.shape[-1]
    if self.kind == "glu":
      a, b = jnp.split(nn.Dense(2 * features, dtype=self.dtype, name="glu")(h), 2, axis=-1)
      return a * nn.sigmoid(b)
    gate = nn.sigmoid(nn.Dense(features, dtype=self.dtype, name="gate")(h))
    return (h if self.kind == "half_glu1" else y) * gate


def activation(name: str):
  """The activation function `config.model.activation` names."""
  if name not in ACTIVATIONS:
    raise ValueError(f"config.model.activation={name!r}; expected one of {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class FeedForward(nn.Module):
  """Dense(mlp) -> activation -> dropout -> Dense(features) -> dropout (LRA's MlpBlock in
  common_layers.py, with its inits: Xavier-uniform kernels, biases normal(stddev=1e-6))."""
  mlp_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    act = activation(self.activation)
    dense = lambda features, name: nn.Dense(features, kernel_init=MLP_KERNEL_INIT,
                                            bias_init=MLP_BIAS_INIT, dtype=self.dtype, name=name)
    h = dense(self.mlp_dim, "in")(x)
    h = act(h)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    h = dense(x.shape[-1], "out")(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


class GatedFeedForward(nn.Module):
  """GLU feed-forward (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6):
  FFN(x) = (act(x W) * (x V)) W2, without biases as in the paper; `activation` "gelu" is GEGLU,
  "silu" SwiGLU (Swish with beta 1), "relu" ReGLU. Dropout after the gate and after W2, as
  FeedForward. The paper shrinks d_ff by 2/3 to keep the parameter count of the two-matrix
  FFN; here `mlp_dim` is used as given (set it to 2/3 of the plain FFN's to match)."""
  mlp_dim: int
  activation: str = "gelu"
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, deterministic=True):
    act = activation(self.activation)
    dense = lambda features, name: nn.Dense(features, use_bias=False, kernel_init=MLP_KERNEL_INIT,
                                            dtype=self.dtype, name=name)
    h = act(dense(self.mlp_dim, "gate")(x)) * dense(self.mlp_dim, "in")(x)
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    h = dense(x.shape[-1], "out")(h)
    return nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)


def feed_forward(kind: str, mlp_dim: int, activation: str, dropout_rate: float, dtype, name: str):
  """The feed-forward sublayer of `config.model.ffn` ("mlp" or "gated")."""
  cls = GatedFeedForward if kind == "gated" else FeedForward
  return cls(mlp_dim, activation, dropout_rate, dtype, name=name)


class EncoderBlock(nn.Module):
  """x + Dropout(Attention(LN(x))); x + FFN(LN(x)): LRA's TransformerBlock layout (the default).

  Options (config.model): `norm` "batch" for BatchNorm, "none" for no normalisation;
  `prenorm=False` for post-norm, x = Norm(x + Dropout(f(x))); `ffn` "gated" for the GLU
  feed-forward; `ffn` other than "mlp"/"gated": no feed-forward sublayer, and the mixer branch
  ends in that OutputStage instead. `rezero`: ReZero residuals (Bachlechner et al. 2020, eq. 5),
  x = x + alpha * f(x) with one learned scalar alpha per block, initialised to 0 and shared by
  both sublayers as in the authors' ReZero Transformer layer (`resweight`); the paper's ReZero
  drops the normalisation too: `norm="none"`. `attention_options`: fields of
  MultiHeadAttention (num_kv_heads, rope, score_bias, qk_norm; see models/attention/base.py).
  A mixer that carries a memory sequence (Luna; registry `memory=True`) is called with it and
  the block returns `(x, next_memory)`. `cross_attention`: the encoder-decoder's decoder block
  (Vaswani et al. 2017, sec. 3.1): x + Dropout(CrossAttention(LN(x), context)) between the two
  sublayers, with the same norm/residual options. `decode=True`: incremental decoding of the
  (causal) self-attention (models/attention/decoding.py); the cross-attention reads the whole
  context at every step.

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
  rezero: bool = False
  attention_options: Mapping[str, Any] | None = None
  # Decoder of an encoder-decoder: a cross-attention sublayer (this variant, over the
  # encoder's output) between the self-attention and the feed-forward; "" = none.
  cross_attention: str = ""
  cross_attention_kwargs: Mapping[str, Any] | None = None

  @nn.compact
  def __call__(self, x, mask, deterministic=True, memory=None, context=None, context_mask=None,
               decode=False):
    check_block_options(self.norm, self.ffn)
    norm = lambda name: functools.partial(normalize, self.norm, dtype=self.dtype, name=name)
    # ReZero's alpha (init 0: every block starts as the identity); 1 otherwise.
    scale = self.param("rezero_alpha", nn.initializers.zeros, ()) if self.rezero else 1.0
    carries_memory = registry.get(self.attention).memory
    h = norm("attention_norm")(x, mask, deterministic) if self.prenorm else x
    attention = MultiHeadAttention(num_heads=self.num_heads, qkv_dim=self.qkv_dim,
                                   attention=self.attention,
                                   attention_kwargs=self.attention_kwargs, causal=self.causal,
                                   dropout_rate=self.attention_dropout_rate,
                                   max_len=self.max_len, dtype=self.dtype,
                                   **dict(self.attention_options or {}), name="attention")
    if carries_memory:
      h, memory = attention(h, mask, deterministic=deterministic, memory=memory)
    elif decode:
      h = attention(h, mask, deterministic=deterministic, decode=True)
    else:
      h = attention(h, mask, deterministic=deterministic)
    h = OutputStage(self.ffn, self.activation, self.dropout_rate, self.dtype,
                    name="output_stage")(h, deterministic)
    x = x + scale * nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    if not self.prenorm:
      x = norm("attention_norm")(x, mask, deterministic)
    if self.cross_attention:
      if context is None:
        raise ValueError("a block with cross_attention needs the encoder's output (context)")
      h = norm("cross_norm")(x, mask, deterministic) if self.prenorm else x
      h = MultiHeadAttention(num_heads=self.num_heads, qkv_dim=self.qkv_dim,
                             attention=self.cross_attention,
                             attention_kwargs=self.cross_attention_kwargs, cross=True,
                             dropout_rate=self.attention_dropout_rate, max_len=self.max_len,
                             kv_max_len=context.shape[1], dtype=self.dtype,
                             name="cross_attention")(h, mask, context=context,
                                                     context_mask=context_mask,
                                                     deterministic=deterministic)
      x = x + scale * nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
      if not self.prenorm:
        x = norm("cross_norm")(x, mask, deterministic)
    elif context is not None:
      raise ValueError("context given to a block without cross_attention")
    if self.ffn in FEED_FORWARDS:
      h = norm("ffn_norm")(x, mask, deterministic) if self.prenorm else x
      ffn = feed_forward(self.ffn, self.mlp_dim, self.activation, self.dropout_rate, self.dtype,
                         "ffn")
      x = x + scale * chunked_ffn.apply_in_chunks(ffn, h, self.ffn_chunk_size, deterministic)
      if not self.prenorm:
        x = norm("ffn_norm")(x, mask, deterministic)
    x = jnp.where(mask[..., None], x, 0.0)
    return (x, memory) if carries_memory else x


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
  rezero: bool = False
  attention_options: Mapping[str, Any] | None = None  # MultiHeadAttention fields (EncoderBlock)
  cross_attention: str = ""   # the decoder of an encoder-decoder (EncoderBlock)
  cross_attention_kwargs: Mapping[str, Any] | None = None

  @nn.compact
  def __call__(self, tokens, mask, deterministic=True, context=None, context_mask=None,
               decode=False):
    """`context`/`context_mask`: the encoder's output, for blocks with cross_attention.
    `decode=True` (a causal stack): incremental decoding; the first call creates the cache over
    a full-length input, later calls take one token (models/attention/decoding.py)."""
    check_block_options(self.norm, self.ffn)
    check_remat(self.remat, self.reversible)
    offset = 0
    if decode:
      if not self.causal or self.prepend_cls or self.reversible:
        raise ValueError("decode=True needs a causal stack without CLS token or reversible "
                         f"layers; got causal={self.causal}, prepend_cls={self.prepend_cls}, "
                         f"reversible={self.reversible}")
      registry.check_decodes(self.attention)
      stepping, index = decoding.decode_index(self)
      if stepping:
        decoding.check_one_token(tokens, "the decoder")
        offset = index
    if self.reversible and self.cross_attention:
      raise ValueError("config.model.reversible=True has no cross-attention sublayer")
    if self.reversible and (self.norm, self.prenorm, self.ffn, self.rezero) != (
        "layer", True, "mlp", False):
      raise ValueError("config.model.reversible=True has LRA's block only (norm='layer', "
                       f"prenorm=True, ffn='mlp', rezero=False); got norm={self.norm!r}, "
                       f"prenorm={self.prenorm}, ffn={self.ffn!r}, rezero={self.rezero}")
    carries_memory = registry.get(self.attention).memory
    if self.reversible and carries_memory:
      raise ValueError(f"config.model.reversible=True: attention {self.attention!r} carries a "
                       "memory sequence from block to block, which reversible layers do not")
    if self.reversible and registry.get(self.attention).batch_stats:
      raise ValueError(f"config.model.reversible=True: attention {self.attention!r} keeps "
                       "training state (batch_stats), which reversible layers do not carry")
    x, mask = Embedder(self.vocab_size, self.emb_dim, self.max_len, self.positions,
                       self.prepend_cls, self.dropout_rate, self.dtype, name="embed")(
                           tokens, mask, deterministic, offset)
    if self.reversible:
      x = reversible.ReversibleLayers(
          self.num_layers, self.num_heads, self.qkv_dim, self.mlp_dim, self.attention,
          self.attention_kwargs, self.causal, self.max_len + int(self.prepend_cls),
          self.dropout_rate, self.attention_dropout_rate, self.activation,
          self.ffn_chunk_size, dtype=self.dtype, attention_options=self.attention_options,
          name="reversible")(x, mask, deterministic)
    else:
      # `deterministic` and `decode` (arguments 3 and 7, counting self) are static under remat:
      # they select code paths.
      block = nn.remat(EncoderBlock, static_argnums=(3, 7)) if self.remat else EncoderBlock
      memory = None  # Luna's packed sequence, carried from block to block (registry.memory)
      for i in range(self.num_layers):
        layer = block(self.num_heads, self.qkv_dim, self.mlp_dim, self.attention,
                      self.attention_kwargs, self.causal,
                      self.max_len + int(self.prepend_cls), self.dropout_rate,
                      self.attention_dropout_rate, self.activation, self.dtype,
                      self.ffn_chunk_size, self.norm, self.prenorm, self.ffn, self.rezero,
                      self.attention_options, self.cross_attention,
                      self.cross_attention_kwargs, name=f"block_{i}")
        if carries_memory:
          x, memory = layer(x, mask, deterministic, memory)
        else:
          x = layer(x, mask, deterministic, None, context, context_mask, decode)
    if self.prenorm:
      x = normalize(self.norm, x, mask, deterministic, self.dtype, "final_norm")
    return x, mask
