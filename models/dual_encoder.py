"""Dual encoder for pair tasks (LRA Retrieval, Tay et al. 2021 sec. 2.2.3).

Both texts go through ONE encoder (shared weights: the same `Encoder` submodule is called
twice, so there is a single parameter set and every attention variant works unchanged; with
`config.model.remat` its blocks are rematerialised in both towers), as in
LRA's TransformerDualEncoder (lra_benchmarks/models/transformer/transformer.py). Each tower is
pooled to u and v; the head (LRA's classifier_head_dual, models/layers/common_layers.py) is
Dense(mlp) -> ReLU -> Dense(mlp / 2) -> ReLU -> Dense(classes) on the interaction features:

- "concat": [u, v]. LRA's default, and what LRA's Retrieval runs used: matching/train.py never
  passes `interaction`, so classifier_head_dual takes its `else` branch; the paper (sec. 2.2.3)
  likewise describes the two compressed representations as concatenated and classified.
- "nli": [u, v, u * v, u - v], the head's `interaction='NLI'` option (unused by LRA's configs;
  many re-implementations use it).

Pooling, as LRA: its dual encoder builds the shared encoder without `classifier=True`, so NO
CLS token is prepended to either tower, and `pooling_mode='CLS'` reads position 0 of each
tower, the first byte of the document. `tower_cls_token=True` prepends a learned CLS token per
tower instead (this project's earlier behaviour; differs from LRA).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from models import heads
from models.blocks import Encoder

INTERACTIONS = ("concat", "nli")


def check_interaction(interaction: str) -> None:
  if interaction not in INTERACTIONS:
    raise ValueError(f"config.model.interaction={interaction!r}; expected one of "
                     f"{', '.join(repr(name) for name in INTERACTIONS)}")


def interaction_features(u, v, interaction: str = "concat"):
  """`[b, d]`, `[b, d]` -> `[b, 2d]` ("concat": [u, v]) or `[b, 4d]` ("nli": [u, v, u*v, u-v])."""
  check_interaction(interaction)
  if interaction == "nli":
    return jnp.concatenate([u, v, u * v, u - v], axis=-1)
  return jnp.concatenate([u, v], axis=-1)


class DualEncoderHead(nn.Module):
  """Dense(mlp) -> ReLU -> Dense(mlp // 2) -> ReLU -> Dense(classes) on the interaction."""
  num_classes: int
  mlp_dim: int
  interaction: str = "concat"

  @nn.compact
  def __call__(self, u, v):
    features = interaction_features(u, v, self.interaction)
    h = nn.relu(nn.Dense(self.mlp_dim, name="hidden")(features))
    h = nn.relu(nn.Dense(self.mlp_dim // 2, name="hidden2")(h))
    return nn.Dense(self.num_classes, name="logits")(h)


class DualEncoderClassifier(nn.Module):
  """batch with `inputs`/`mask` and `inputs2`/`mask2` -> (logits `[b, classes]`, aux)."""
  encoder: Encoder
  num_classes: int
  mlp_dim: int
  pooling: str = "CLS"
  interaction: str = "concat"

  @nn.compact
  def __call__(self, batch: Mapping[str, Any], deterministic=True):
    for key in ("inputs2", "mask2"):
      if key not in batch:
        raise ValueError(f"the dual encoder needs a pair batch; {key!r} is missing")
    pooled = []
    for tokens, mask in ((batch["inputs"], batch["mask"]), (batch["inputs2"], batch["mask2"])):
      hidden, mask = self.encoder(tokens, mask, deterministic)  # the same module: shared weights
      pooled.append(heads.pool(hidden, mask, self.pooling))
    u, v = pooled
    logits = DualEncoderHead(self.num_classes, self.mlp_dim, self.interaction, name="head")(u, v)
    return logits, {"pooled": u, "pooled2": v}
