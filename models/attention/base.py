"""The shared projection base: q/k/v/output projections around any registered mixer.

A variant only writes its mixer (see `registry.py`); this module owns the projections,
the masks, cross attention and the build-time capability checks.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from models.attention import registry

PROJECTION_INIT = nn.initializers.xavier_uniform()


class MultiHeadAttention(nn.Module):
  """Multi-head attention whose mixing is the registered variant `attention`.

  Call: `(x, mask, context=None, context_mask=None, deterministic=True)` with `x`
  `[b, l, features]`, `mask` bool `[b, l]`; `context` (cross attention) `[b, lc, features]`.
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

  @nn.compact
  def __call__(self, x, mask=None, context=None, context_mask=None, deterministic=True):
    if context is not None and not self.cross:
      raise ValueError("context given to a self-attention layer; build it with cross=True")
    if self.qkv_dim % self.num_heads:
      raise ValueError(f"config.model.qkv_dim={self.qkv_dim} is not divisible by "
                       f"num_heads={self.num_heads}")
    head_dim = self.qkv_dim // self.num_heads
    # LRA's projections (transformer.py's SelfAttention(bias=False, kernel_init=xavier_uniform),
    # and every other LRA model's the same): no bias on q/k/v or on the output, Xavier-uniform
    # kernels over the flattened [in, heads * head_dim] shape, as flax's DenseGeneral did then.
    dense = lambda name: nn.DenseGeneral((self.num_heads, head_dim), use_bias=False,
                                         kernel_init=PROJECTION_INIT, dtype=self.dtype, name=name)
    mixer_context = {"dropout_rate": self.dropout_rate}
    spec = registry.get(self.attention)
    if self.max_len is not None:
      mixer_context["max_len"] = self.max_len
      mixer_context["kv_max_len"] = self.kv_max_len or self.max_len
    elif spec.needs_max_len:
      raise ValueError(f"attention {self.attention!r} needs a fixed max_len")
    mixer = registry.build_mixer(self.attention, self.attention_kwargs, causal=self.causal,
                                 cross=self.cross, name="mixer", **mixer_context)
    if spec.kind == "sequence":  # it mixes x itself, with its own projections (registry.py)
      if self.out_dim not in (None, x.shape[-1]):
        raise ValueError(f"attention {self.attention!r} is a sequence mixer: its output has the "
                         f"input's width {x.shape[-1]}, not out_dim={self.out_dim}")
      return mixer(x, mask, deterministic=deterministic)
    kv_input = x if context is None else context
    kv_mask = mask if context is None else context_mask
    q, k, v = dense("query")(x), dense("key")(kv_input), dense("value")(kv_input)
    mixed = mixer(q, k, v, q_mask=mask, kv_mask=kv_mask, deterministic=deterministic,
                  inputs_q=x)
    out_dim = self.out_dim or x.shape[-1]
    return nn.DenseGeneral(out_dim, axis=(-2, -1), use_bias=False, kernel_init=PROJECTION_INIT,
                           dtype=self.dtype, name="out")(mixed)
