"""Builds the model a config asks for, given the task's metadata."""
from __future__ import annotations

import ml_collections

from models.classifier import EncoderClassifier, encoder_from_config
from models.dual_encoder import DualEncoderClassifier, check_interaction


def build_model(model_cfg: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                max_len: int, pair: bool = False):
  """Returns a Linen module called as `model.apply(params, batch, deterministic)`. The encoder
  (one per model; shared by the dual encoder's towers) comes from `encoder_from_config`, which
  also carries `model_cfg.remat` (blocks in nn.remat) and refuses remat with reversible layers."""
  if model_cfg.pooling not in ("CLS", "MEAN"):
    raise ValueError(f"config.model.pooling={model_cfg.pooling!r}; expected 'CLS' or 'MEAN'")
  if pair:  # two towers sharing one encoder (models/dual_encoder.py)
    return _dual_encoder(model_cfg, vocab_size, num_classes, max_len)
  encoder = encoder_from_config(model_cfg, vocab_size, max_len,
                                prepend_cls=model_cfg.pooling == "CLS")
  return EncoderClassifier(encoder=encoder, num_classes=num_classes,
                           mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling)


def _dual_encoder(model_cfg, vocab_size, num_classes, max_len) -> DualEncoderClassifier:
  # Retrieval's fields live in configs/base_retrieval.py; a config without them (built by hand)
  # gets LRA's behaviour: [u, v] and no CLS token per tower.
  interaction = model_cfg.get("interaction", "concat")
  check_interaction(interaction)  # at build time, before any data is read
  tower_cls_token = model_cfg.get("tower_cls_token", False)
  if tower_cls_token and model_cfg.pooling != "CLS":
    raise ValueError("config.model.tower_cls_token=True prepends a token that only "
                     f"config.model.pooling='CLS' reads; pooling is {model_cfg.pooling!r}")
  encoder = encoder_from_config(model_cfg, vocab_size, max_len, prepend_cls=tower_cls_token)
  return DualEncoderClassifier(encoder=encoder, num_classes=num_classes,
                               mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling,
                               interaction=interaction)
