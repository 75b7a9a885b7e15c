"""The shared projection base: q/k/v/output projections around any registered mixer.

A variant only writes its mixer (see `registry.py`); this module owns the projections,
the masks, cross attention and the build-time capability checks.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, positions, registry

PROJECTION_INIT = nn.initializers.xavier_uniform()
SCORE_BIASES = ("none", "alibi", "t5")


class MultiHeadAttention(nn.Module):
  """Multi-head attention whose mixing is the registered variant `attention`.

  Call: `(x, mask, context=None, context_mask=None, memory=None, deterministic=True)` with `x`
  `[b, l, features]`, `mask` bool `[b, l]`; `context` (cross attention) `[b, lc, features]`;
  `memory`: the carried sequence of a variant registered with memory=True (Luna), which then
  returns `(y, next_memory)`.

  Head and position options (each needs the variant's registry flag; asking a variant that
  lacks it is a ValueError at build time). Order: project, qk_norm, rope, repeat k/v heads, mix.
    num_kv_heads  0 = num_heads. Otherwise the key and value projections have this many heads,
                  each shared by num_heads / num_kv_heads consecutive query heads: multi-query
                  (1; Shazeer 2019) or grouped-query attention (Ainslie et al. 2023). The k/v
                  heads are repeated to num_heads before the mixer (its contract is [b, l, h, d]
                  for q, k and v alike), so this saves projection parameters and compute, not
                  mixer memory.
    rope          rotary positions on q and k (Su et al. 2021; `positions.rotate`), base
                  `rope_base`.
    score_bias    "alibi" (Press et al. 2022) or "t5" (Raffel et al. 2020; a learned
                  [t5_num_buckets, num_heads] table `t5_relative_bias`, one per layer, where T5
                  shares one across layers): the mixer adds `fn(q_pos, k_pos)` to its logits.
    qk_norm       Henry et al. 2020 ("Query-Key Normalization for Transformers"): q and k are
                  l2-normalised per head and the logits scaled by a learned scalar g
                  (`qk_norm_scale`, one per layer) instead of 1/sqrt(d); g starts at the paper's
                  log2(L^2 - L), L = max_len (or the length seen at init). The mixer still divides
                  by sqrt(d), so q is multiplied by g * sqrt(d).
  Positions: 0..L-1 of each sequence; causal queries shorter than the keys are aligned to the
  keys' end (`positions.query_positions`).

  `decode=True` (causal self-attention of a variant registered with `decode`): incremental
  decoding through the "cache" collection (models/attention/decoding.py). The base keeps the
  token's position (for RoPE and the score bias) and hands the mixer k/v with `num_kv_heads`
  heads, so an MQA/GQA cache holds only those.
  """
  num_heads: int
  qkv_dim: int
  attention: str = "transformer"
  attention_kwargs: Mapping[str, Any] | None = None
  causal: bool = False
  cross: bool = False
  dropout_rate: float = 0.0  # attention-weight dropout, for variants that have weights
  max_len: int | None = None
  kv_max_len: int | None = None
  out_dim: int | None = None
  dtype: Any = jnp.float32
  num_kv_heads: int = 0
  rope: bool = False
  rope_base: float = 10000.0
  score_bias: str = "none"  # or "alibi", "t5"
  t5_num_buckets: int = 32
  t5_max_distance: int = 128
  qk_norm: bool = False

  @nn.compact
  def __call__(self, x, mask=None, context=None, context_mask=None, memory=None,
               deterministic=True, decode=False):
    if context is not None and not self.cross:
      raise ValueError("context given to a self-attention layer; build it with cross=True")
    if self.qkv_dim % self.num_heads:
      raise ValueError(f"config.model.qkv_dim={self.qkv_dim} is not divisible by "
                       f"num_heads={self.num_heads}")
    head_dim = self.qkv_dim // self.num_heads
    spec = registry.get(self.attention)
    kv_heads = self._check_options(spec, head_dim)
    # LRA's projections (transformer.py's SelfAttention(bias=False, kernel_init=xavier_uniform),
    # and every other LRA model's the same): no bias on q/k/v or on the output, Xavier-uniform
    # kernels over the flattened [in, heads * head_dim] shape, as flax's DenseGeneral did then.
    dense = lambda name, heads: nn.DenseGeneral((heads, head_dim), use_bias=False,
                                                kernel_init=PROJECTION_INIT, dtype=self.dtype,
                                                name=name)
    mixer_context = {"dropout_rate": self.dropout_rate, "num_heads": self.num_heads}
    if self.max_len is not None:
      mixer_context["max_len"] = self.max_len
      mixer_context["kv_max_len"] = self.kv_max_len or self.max_len
    elif spec.needs_max_len:
      raise ValueError(f"attention {self.attention!r} needs a fixed max_len")
    mixer = registry.build_mixer(self.attention, self.attention_kwargs, causal=self.causal,
                                 cross=self.cross, name="mixer", **mixer_context)
    if memory is not None and not spec.memory:
      raise ValueError(f"attention {self.attention!r} carries no memory between blocks (only "
                       "variants registered with memory=True do); memory must be None")
    if decode:
      if not self.causal or self.cross or context is not None:
        raise ValueError("decode=True is incremental decoding of causal self-attention; this "
                         f"layer has causal={self.causal}, cross={self.cross}")
      registry.check_decodes(self.attention)
    if spec.kind == "sequence":  # it mixes x itself, with its own projections (registry.py)
      if self.out_dim not in (None, x.shape[-1]):
        raise ValueError(f"attention {self.attention!r} is a sequence mixer: its output has the "
                         f"input's width {x.shape[-1]}, not out_dim={self.out_dim}")
      if spec.memory:  # -> (y, next_memory)
        return mixer(x, mask, memory=memory, deterministic=deterministic)
      if decode:
        return mixer(x, mask, deterministic=deterministic, decode=True)
      return mixer(x, mask, deterministic=deterministic)
    kv_input = x if context is None else context
    kv_mask = mask if context is None else context_mask
    q = dense("query", self.num_heads)(x)
    k, v = dense("key", kv_heads)(kv_input), dense("value", kv_heads)(kv_input)
    q_pos = positions.query_positions(q.shape[1], k.shape[1], self.causal)
    k_pos = jnp.arange(k.shape[1])
    if decode:
      stepping, index = decoding.decode_index(self)
      if stepping:  # one token at position `index`
        decoding.check_one_token(x, f"attention {self.attention!r}")
        q_pos = k_pos = index[None]
    if self.qk_norm:
      q, k = self._normalise_qk(q, k)
    if self.rope:
      q, k = (positions.rotate(q, q_pos, self.rope_base),
              positions.rotate(k, k_pos, self.rope_base))
    if kv_heads != self.num_heads and not decode:  # query head i reads k/v head i // group
      group = self.num_heads // kv_heads
      k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    extra = {}
    if self.score_bias != "none":
      extra["score_bias"] = self._score_bias()
    if decode:
      extra["decode"] = True
    mixed = mixer(q, k, v, q_mask=mask, kv_mask=kv_mask, deterministic=deterministic,
                  inputs_q=x, **extra)
    out_dim = self.out_dim or x.shape[-1]
    return nn.DenseGeneral(out_dim, axis=(-2, -1), use_bias=False, kernel_init=PROJECTION_INIT,
                           dtype=self.dtype, name="out")(mixed)

  def _check_options(self, spec, head_dim) -> int:
    """Build-time checks of the head and position options; returns the key/value heads."""
    name = self.attention
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_kv_heads < 0 or self.num_heads % kv_heads:
      raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads="
                       f"{self.num_heads} (0 = num_heads)")
    if kv_heads != self.num_heads and not spec.kv_heads:
      raise ValueError(f"attention {name!r} cannot take fewer key/value heads "
                       f"(num_kv_heads={self.num_kv_heads}): "
                       + ("a sequence mixer has no key/value heads" if spec.kind == "sequence"
                          else "its registry entry has kv_heads=False"))
    if self.rope and not spec.rope:
      raise ValueError(f"attention {name!r} cannot take rope=True: "
                       + ("a sequence mixer has no queries and keys to rotate"
                          if spec.kind == "sequence" else
                          "it does not compare queries with keys by a dot product "
                          "(registry rope=False)"))
    if self.rope and head_dim % 2:
      raise ValueError(f"rope=True needs an even head dimension; qkv_dim / num_heads = "
                       f"{self.qkv_dim} / {self.num_heads} = {head_dim}")
    if self.score_bias not in SCORE_BIASES:
      raise ValueError(f"score_bias={self.score_bias!r}; expected one of {SCORE_BIASES}")
    if self.score_bias != "none" and not spec.score_bias:
      raise ValueError(f"attention {name!r} cannot take score_bias={self.score_bias!r}: it "
                       "forms no [queries, keys] logits to add a bias to; variants that do: "
                       + ", ".join(n for n in registry.names() if registry.get(n).score_bias))
    if self.score_bias == "t5" and (self.t5_num_buckets < 4 or self.t5_num_buckets % 2
                                    or self.t5_max_distance < self.t5_num_buckets // 2):
      raise ValueError(f"score_bias='t5' needs an even t5_num_buckets >= 4 and "
                       f"t5_max_distance >= t5_num_buckets / 2; got {self.t5_num_buckets}, "
                       f"{self.t5_max_distance}")
    if self.qk_norm and spec.kind != "qkv":
      raise ValueError(f"attention {name!r} cannot take qk_norm=True: a sequence mixer has no "
                       "queries and keys to normalise")
    return kv_heads

  def _normalise_qk(self, q, k):
    """Henry et al. 2020: logits g * (q / |q|) . (k / |k|); q carries g * sqrt(d) because the
    mixer divides its logits by sqrt(d)."""
    length = self.max_len or k.shape[1]

    def init(_, shape, dtype):
      return jnp.full(shape, math.log2(max(length * length - length, 2)), dtype)

    g = self.param("qk_norm_scale", init, (), jnp.float32)
    unit = lambda t: (t.astype(jnp.float32) * jax.lax.rsqrt(
        jnp.maximum((t.astype(jnp.float32) ** 2).sum(-1, keepdims=True), 1e-12)))
    scale = g * math.sqrt(q.shape[-1])
    return (unit(q) * scale).astype(q.dtype), unit(k).astype(k.dtype)

  def _score_bias(self):
    """The bias function `fn(q_pos, k_pos) -> [h, lq, lk]` float32 handed to the mixer."""
    if self.score_bias == "alibi":
      return positions.alibi_bias(self.num_heads)
    # t5x's embedding init (flax default_embed_init: variance scaling 1, fan-in = heads).
    init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-1, out_axis=-2)
    table = self.param("t5_relative_bias", init, (self.t5_num_buckets, self.num_heads),
                       jnp.float32)
    return positions.t5_bias(table, bidirectional=not self.causal,
                             max_distance=self.t5_max_distance)
