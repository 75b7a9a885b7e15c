"""Transformer-XL (Dai et al. 2019): segment-level recurrence with relative positional encodings,
as a causal decoder stack.

A long sequence is cut into segments of S tokens; layer n of segment tau attends over
[SG(h^{n-1}_{tau-1}) memory; h^{n-1}_tau] (sec. 3.2): the last M hidden states of the previous
segments, kept without gradient (stop_gradient), and the current segment, causally. Positions are
relative (sec. 3.3), so a memory computed at one offset reads the same at the next:

  A^rel_{i,j} = q_i^T k_j                     (a) content
              + q_i^T W_{k,R} R_{i-j}          (b) content-dependent position
              + u^T k_j                        (c) global content bias
              + v^T W_{k,R} R_{i-j}            (d) global position bias

with q_i = W_q x_i, k_j = W_{k,E} x_j, R the parameter-free sinusoid (Vaswani et al.) of the
distance i - j, u and v learned per head. The terms are grouped as (q_i + u)^T k_j and
(q_i + v)^T W_{k,R} R_{i-j}, as the authors' code (kimiyoung/transformer-xl,
RelPartialLearnableMultiHeadAttn) does. The position term is computed for the K = M + L
distances as an [L, K] matrix of (q_i + v) . (W_{k,R} R_d) and realigned per query row by the
"relative shift" of appendix B (pad, reshape, slice), so no [L, K, d] tensor is formed: memory
O(L * K), the dense logits' own size (exact attention: XL is the recurrence family, not a
sparse one).

Differences from the authors' code, all options there: the block is pre-LayerNorm (their
`pre_lnorm=True`; the LayerNorm is applied to memory and segment alike, as theirs), so the
stack matches the repository's block layout (x + attn(LN(x)), x + FFN(LN(x)), final LayerNorm);
u and v belong to each layer (their `untie_r=True`; by default they share one pair across
layers); no `same_length` or `clamp_len` (their evaluation-time options).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import decoding, masks
from models.attention.base import PROJECTION_INIT
from models.blocks import FeedForward, normalize
from models.embedding import Embedder

BIAS_INIT = nn.initializers.normal(stddev=0.02)  # the authors' init_std for r_w_bias/r_r_bias


def sinusoid(distances, features: int):
  """R: `[K, features]` float32 sinusoid of float `distances` `[K]` (Vaswani et al. sec. 3.5,
  in the authors' layout: [sin | cos] halves, inverse frequencies 10000^(-2i/features))."""
  inv_freq = 1.0 / (10000.0 ** (np.arange(0, features, 2, dtype=np.float64) / features))
  angles = distances.astype(jnp.float32)[:, None] * inv_freq.astype(np.float32)[None, :]
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[:, :features]


def relative_shift(x):
  """Appendix B: `x` `[..., L, K]` whose column c holds distance K - 1 - c (the distances K-1
  ... 0, the same for every row) -> `[..., L, K]` whose (i, j) holds row i's value at distance
  (K - L + i) - j, i.e. x[..., i, j + L - 1 - i]: query i sits at position K - L + i of the keys.
  One zero column is padded on the left and the [L, K+1] block re-read as [K+1, L]; dropping
  its first row moves row i left by L - 1 - i. Entries with j > K - L + i (future keys) hold
  other rows' values: the causal mask covers them."""
  *lead, length, klen = x.shape
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
  x = x.reshape(*lead, klen + 1, length)[..., 1:, :]
  return x.reshape(*lead, length, klen)


class RelativeAttention(nn.Module):
  """XL's multi-head attention of a segment `x` `[b, L, e]` over [memory `[b, M, e]`; x]
  (sec. 3.3), causal: query i (position M + i) sees keys j <= M + i. Projections without bias
  (as the repository's base), logits and softmax in float32, dropout on the attention weights.
  `pos_emb`: R `[M + L, e]` for the distances M + L - 1 ... 0 (the stack computes it once per
  segment, with its dropout); None computes it here."""
  num_heads: int
  qkv_dim: int
  dropout_rate: float = 0.0  # attention-weight dropout (the authors' dropatt)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, memory=None, deterministic=True, pos_emb=None, step_visible=None):
    """`step_visible` (incremental decoding): `memory` is then the whole key sequence, x among
    them, `pos_emb` `[K, e]` R of each key's distance from the one query, and `step_visible`
    bool `[K]` the keys it sees; the position term needs no shift."""
    if self.qkv_dim % self.num_heads:
      raise ValueError(f"qkv_dim={self.qkv_dim} is not divisible by num_heads={self.num_heads}")
    head_dim = self.qkv_dim // self.num_heads
    length, features = x.shape[1], x.shape[-1]
    if step_visible is not None:
      cat = memory.astype(x.dtype)
    else:
      cat = x if memory is None else jnp.concatenate([memory.astype(x.dtype), x], axis=1)
    klen = cat.shape[1]
    mlen = klen - length
    if pos_emb is None:
      pos_emb = sinusoid(jnp.arange(klen - 1, -1, -1), features)
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), use_bias=False,
                                         kernel_init=PROJECTION_INIT, dtype=self.dtype,
                                         name=name)
    q = dense("query")(x)                          # W_q x_i           [b, L, h, d]
    k, v = dense("key")(cat), dense("value")(cat)  # W_{k,E} x_j, W_v  [b, K, h, d]
    r = dense("position")(pos_emb.astype(self.dtype))  # W_{k,R} R     [K, h, d]
    u = self.param("content_bias", BIAS_INIT, (self.num_heads, head_dim), jnp.float32)
    v_bias = self.param("position_bias", BIAS_INIT, (self.num_heads, head_dim), jnp.float32)
    q32 = q.astype(jnp.float32)
    f32 = dict(preferred_element_type=jnp.float32)
    ac = jnp.einsum("bqhd,bkhd->bhqk", q32 + u, k, **f32)                  # (a) + (c)
    bd = jnp.einsum("bqhd,khd->bhqk", q32 + v_bias, r, **f32)               # (b) + (d)
    if step_visible is None:
      bd = relative_shift(bd)
      visible = jnp.arange(klen)[None, :] <= mlen + jnp.arange(length)[:, None]  # [L, K]
    else:
      visible = step_visible[None, :]
    logits = (ac + bd) / np.sqrt(head_dim).astype(np.float32)
    logits = jnp.where(visible, logits, masks.big_negative(jnp.float32))
    weights = jax.nn.softmax(logits, axis=-1)
    weights = nn.Dropout(self.dropout_rate)(weights, deterministic=deterministic)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, **f32).astype(x.dtype)
    return nn.DenseGeneral(features, axis=(-2, -1), use_bias=False, kernel_init=PROJECTION_INIT,
                           dtype=self.dtype, name="out")(out)


class XLBlock(nn.Module):
  """The repository's pre-LN block with XL attention: x + Dropout(Attn(LN(x), LN(memory))),
  x + FeedForward(LN(x)) (the authors' pre_lnorm layer: one LayerNorm over [memory; x])."""
  num_heads: int
  qkv_dim: int
  mlp_dim: int
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, memory, pos_emb, deterministic=True, step_visible=None):
    norm = nn.LayerNorm(dtype=self.dtype, name="attention_norm")
    h = RelativeAttention(self.num_heads, self.qkv_dim, self.attention_dropout_rate, self.dtype,
                          name="attention")(norm(x), None if memory is None else norm(memory),
                                            deterministic, pos_emb, step_visible)
    x = x + nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    ones = jnp.ones(x.shape[:2], bool)  # normalize's mask (LayerNorm does not read it)
    h = normalize("layer", x, ones, deterministic, self.dtype, "ffn_norm")
    return x + FeedForward(self.mlp_dim, self.activation, self.dropout_rate, self.dtype,
                           name="ffn")(h, deterministic)


class XLDecoderStack(nn.Module):
  """`num_layers` XL blocks and a final LayerNorm over embedded inputs.

  Call: `(x [b, S, e], mems, deterministic) -> (h [b, S, e], new_mems)`. `mems`: None (no
  memory) or a list of `num_layers` arrays `[b, M_l, e]`, layer l's memory (the input of layer l
  in earlier segments). `new_mems[l]` = stop_gradient(the last `memory_length` states of
  concat(mems[l], input of layer l)) (sec. 3.2, SG(h^{n-1}_tau)); `[b, 0, e]` when
  memory_length is 0. Dropout (`dropout_rate`) on R, after attention and in the feed-forward,
  as the authors' (`drop` on pos_emb and the sublayer outputs)."""
  num_layers: int
  num_heads: int
  qkv_dim: int
  mlp_dim: int
  memory_length: int = 0
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, mems: Sequence[Any] | None = None, deterministic=True, step=None):
    if step is not None:
      return self._step(x, *step, deterministic)
    if mems is not None and len(mems) != self.num_layers:
      raise ValueError(f"mems has {len(mems)} entries; expected one per layer "
                       f"({self.num_layers})")
    if self.memory_length < 0:
      raise ValueError(f"memory_length={self.memory_length} must be >= 0")
    mlen = 0 if mems is None else mems[0].shape[1]
    klen = mlen + x.shape[1]
    pos_emb = sinusoid(jnp.arange(klen - 1, -1, -1), x.shape[-1])  # distances K-1 ... 0
    pos_emb = nn.Dropout(self.dropout_rate)(pos_emb, deterministic=deterministic)
    new_mems = []
    for i in range(self.num_layers):
      memory = None if mems is None or mlen == 0 else mems[i]
      cat = x if memory is None else jnp.concatenate([memory.astype(x.dtype), x], axis=1)
      # The last M states, M = memory_length (cat[:, -0:] would keep them all).
      new_mems.append(jax.lax.stop_gradient(cat[:, cat.shape[1] - min(self.memory_length,
                                                                        cat.shape[1]):]))
      x = XLBlock(self.num_heads, self.qkv_dim, self.mlp_dim, self.dropout_rate,
                  self.attention_dropout_rate, self.activation, self.dtype,
                  name=f"block_{i}")(x, memory, pos_emb, deterministic)
    return nn.LayerNorm(dtype=self.dtype, name="final_norm")(x), new_mems

  def _step(self, x, buffers, slot, visible, deterministic):
    """One token `x` `[b, 1, e]` (incremental decoding, `XLDecoder`): `buffers`
    `[num_layers, b, K, e]` hold each layer's [memory; current segment] inputs, this token goes
    to slot `slot` (traced) of each, keys `visible` `[K]`. -> (h `[b, 1, e]`, new buffers)."""
    klen = buffers.shape[2]
    distances = jnp.maximum(slot - jnp.arange(klen), 0)  # the hidden future keys: any R
    pos_emb = nn.Dropout(self.dropout_rate)(sinusoid(distances, x.shape[-1]),
                                            deterministic=deterministic)
    new = []
    for i in range(self.num_layers):
      keys = jax.lax.dynamic_update_slice_in_dim(buffers[i], x.astype(buffers.dtype), slot, 1)
      new.append(keys)
      x = XLBlock(self.num_heads, self.qkv_dim, self.mlp_dim, self.dropout_rate,
                  self.attention_dropout_rate, self.activation, self.dtype,
                  name=f"block_{i}")(x, keys, pos_emb, deterministic, visible)
    return nn.LayerNorm(dtype=self.dtype, name="final_norm")(x), jnp.stack(new)


def segment_recurrent(stack: XLDecoderStack, x, segment_length: int, memory_length: int,
                      deterministic: bool = True):
  """Runs a bound `stack` (a submodule, called inside its parent's compact method, or under
  `nn.apply`) over `x` `[b, L, e]` one segment of `segment_length` tokens at a time, carrying
  each layer's memory of the last `memory_length` states; returns `[b, L, e]`.

  The first segment has no memory (the authors' empty init_mems); memories grow to
  memory_length. A Python loop over the L / S segments (static shapes; the trace grows with
  their number). With memory_length >= L - S, every query sees its whole prefix and the output
  equals one segment of length L (the XL property; causal attention over the prefix)."""
  length = x.shape[1]
  if segment_length <= 0 or length % segment_length:
    raise ValueError(f"xl_segment_length={segment_length} must be positive and divide the "
                     f"sequence length {length}")
  if memory_length != stack.memory_length:
    raise ValueError(f"memory_length={memory_length} differs from the stack's "
                     f"memory_length={stack.memory_length}")
  mems, outputs = None, []
  for start in range(0, length, segment_length):
    h, mems = stack(x[:, start:start + segment_length], mems, deterministic)
    outputs.append(h)
  return jnp.concatenate(outputs, axis=1)


class XLDecoder(nn.Module):
  """A drop-in for `models.blocks.Encoder` as `DecoderLM`'s causal stack:
  `(tokens [b, L], mask [b, L], deterministic, decode=False) -> (hidden [b, L, e], mask)`.
  Token embedding without absolute positions (XL's are relative, in every layer; the submodule
  is "embed" as the Encoder's, so tied output embeddings find "embed/tokens/embedding"), then
  `segment_recurrent` over segments of `segment_length` with `memory_length` memories.
  Padding: the stack is causal, so right padding never reaches a real token (left padding would
  enter the memory: not supported); padded outputs are whatever the stack computed there.

  `decode=True`: incremental decoding through the "cache" collection (the repository's protocol,
  models/attention/decoding.py), exactly the segmented forward's computation: a cache `buffers`
  `[num_layers, b, M + S, e]` per layer holds the memory (right-aligned, `memory_filled` of its
  M slots valid) and the current segment's layer inputs so far; a token at offset i of its
  segment is slot M + i and sees the valid memory and the segment up to itself, at the
  distances of the segmented forward. At a segment's end the buffers shift by S, keeping the
  last M states as the next memory (sec. 3.2's SG(h) concatenation). The cache's size is
  (M + S) e per layer, whatever the length decoded."""
  vocab_size: int
  emb_dim: int
  num_heads: int
  num_layers: int
  qkv_dim: int
  mlp_dim: int
  max_len: int
  segment_length: int
  memory_length: int
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  activation: str = "gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask, deterministic=True, decode=False):
    x, mask = Embedder(self.vocab_size, self.emb_dim, self.max_len, "none", False,
                       self.dropout_rate, self.dtype, name="embed")(tokens, mask, deterministic)
    stack = XLDecoderStack(self.num_layers, self.num_heads, self.qkv_dim, self.mlp_dim,
                           self.memory_length, self.dropout_rate, self.attention_dropout_rate,
                           self.activation, self.dtype, name="stack")
    if decode:
      stepping, index = decoding.decode_index(self)
      if stepping:
        decoding.check_one_token(x, "the Transformer-XL decoder")
        return self._step(stack, x, index, deterministic), mask
      slots = self.memory_length + self.segment_length
      self.variable("cache", "buffers", jnp.zeros,
                    (self.num_layers, x.shape[0], slots, x.shape[-1]), x.dtype)
      self.variable("cache", "memory_filled", lambda: jnp.zeros((), jnp.int32))
    return segment_recurrent(stack, x, self.segment_length, self.memory_length,
                             deterministic), mask

  def _step(self, stack, x, index, deterministic):
    memory, segment = self.memory_length, self.segment_length
    buffers = self.variable("cache", "buffers", None)
    filled = self.variable("cache", "memory_filled", None)
    offset = index % segment
    slot = memory + offset
    keys = jnp.arange(memory + segment)
    visible = (keys >= memory - filled.value) & (keys <= slot)
    h, new = stack(x, deterministic=deterministic, step=(buffers.value, slot, visible))
    # The segment's last token: the last M of [memory; segment] become the memory.
    end = offset == segment - 1
    shifted = jnp.concatenate([new[:, :, segment:], jnp.zeros_like(new[:, :, :segment])], 2)
    buffers.value = jnp.where(end, shifted, new)
    filled.value = jnp.where(end, jnp.minimum(memory, filled.value + segment), filled.value)
    return h
