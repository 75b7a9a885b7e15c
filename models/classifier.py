"""Encoder classifier for single-input LRA tasks, built from the config alone."""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from models import heads
from models.attention import registry
from models.blocks import Encoder, check_remat


class EncoderClassifier(nn.Module):
  """tokens `[b, l]`, mask `[b, l]` -> (logits `[b, classes]`, aux dict).

  LRA's TransformerEncoder with classifier=True: with CLS pooling a zero-initialised CLS
  vector is prepended (position 0 of the position table), then blocks, the final LayerNorm
  and classifier_head (models/heads.py)."""
  encoder: Encoder
  num_classes: int
  mlp_dim: int
  pooling: str = "CLS"

  @nn.compact
  def __call__(self, batch: Mapping[str, Any], deterministic=True):
    hidden, mask = self.encoder(batch["inputs"], batch["mask"], deterministic)
    pooled = heads.pool(hidden, mask, self.pooling)
    logits = heads.ClassifierHead(self.num_classes, self.mlp_dim, name="head")(pooled)
    return logits, {"pooled": pooled}


# Head and position options: config.model field -> MultiHeadAttention field, with the default
# that leaves the attention as it was (models/attention/base.py says what each does).
ATTENTION_OPTIONS = {"num_kv_heads": 0, "rope": False, "score_bias": "none", "qk_norm": False}


def attention_options(model_cfg: ml_collections.ConfigDict) -> dict[str, Any]:
  """The head and position options the config sets (those at their default are left out, so
  a model without them builds exactly as before the options existed)."""
  return {field: model_cfg.get(field, default) for field, default in ATTENTION_OPTIONS.items()
          if model_cfg.get(field, default) != default}


def encoder_from_config(model_cfg: ml_collections.ConfigDict, vocab_size: int,
                        max_len: int, prepend_cls: bool, **overrides) -> Encoder:
  """The shared `Encoder` the config describes; `overrides` replace its fields (the decoders
  of models/decoder.py: causal=True, cross_attention, num_layers, name)."""
  causal = overrides.get("causal", model_cfg.get("causal", False))
  registry.check_supports(model_cfg.attention, causal=causal)
  remat = model_cfg.get("remat", False)
  check_remat(remat, model_cfg.reversible)  # at build time, before any data is read
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[model_cfg.dtype]
  fields = dict(vocab_size=vocab_size, emb_dim=model_cfg.emb_dim,
                num_heads=model_cfg.num_heads, num_layers=model_cfg.num_layers,
                qkv_dim=model_cfg.qkv_dim, mlp_dim=model_cfg.mlp_dim, max_len=max_len,
                attention=model_cfg.attention,
                attention_kwargs=dict(model_cfg.attention_kwargs),
                causal=causal, positions=model_cfg.positions,
                prepend_cls=prepend_cls, dropout_rate=model_cfg.dropout_rate,
                attention_dropout_rate=model_cfg.attention_dropout_rate,
                activation=model_cfg.activation, dtype=dtype,
                reversible=model_cfg.reversible, ffn_chunk_size=model_cfg.ffn_chunk_size,
                norm=model_cfg.norm, prenorm=model_cfg.prenorm, ffn=model_cfg.ffn,
                remat=remat, rezero=model_cfg.get("rezero", False),
                attention_options=attention_options(model_cfg), name="encoder")
  fields.update(overrides)
  return Encoder(**fields)
