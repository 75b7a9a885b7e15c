"""Builds the model a config asks for, given the task's metadata."""
from __future__ import annotations

import ml_collections

from models.classifier import EncoderClassifier, encoder_from_config


def build_model(model_cfg: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                max_len: int, pair: bool = False):
  """Returns a Linen module called as `model.apply(params, batch, deterministic)`."""
  if model_cfg.pooling not in ("CLS", "MEAN"):
    raise ValueError(f"config.model.pooling={model_cfg.pooling!r}; expected 'CLS' or 'MEAN'")
  if pair:
    raise NotImplementedError("pair tasks need the dual encoder (retrieval issue)")
  encoder = encoder_from_config(model_cfg, vocab_size, max_len,
                                prepend_cls=model_cfg.pooling == "CLS")
  return EncoderClassifier(encoder=encoder, num_classes=num_classes,
                           mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling)
