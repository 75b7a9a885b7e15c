"""Builds the model a config asks for, given the task's metadata."""
from __future__ import annotations

import ml_collections

from models.classifier import EncoderClassifier, encoder_from_config
from models.dual_encoder import DualEncoderClassifier


def build_model(model_cfg: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                max_len: int, pair: bool = False):
  """Returns a Linen module called as `model.apply(params, batch, deterministic)`."""
  if model_cfg.pooling not in ("CLS", "MEAN"):
    raise ValueError(f"config.model.pooling={model_cfg.pooling!r}; expected 'CLS' or 'MEAN'")
  encoder = encoder_from_config(model_cfg, vocab_size, max_len,
                                prepend_cls=model_cfg.pooling == "CLS")
  if pair:  # two towers sharing this one encoder (models/dual_encoder.py)
    return DualEncoderClassifier(encoder=encoder, num_classes=num_classes,
                                 mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling)
  return EncoderClassifier(encoder=encoder, num_classes=num_classes,
                           mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling)
