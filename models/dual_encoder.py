"""Dual encoder for pair tasks (LRA Retrieval, Tay et al. 2021 sec. 2.2.3).

Both texts go through ONE encoder (shared weights: the same `Encoder` submodule is called
twice, so there is a single parameter set and every attention variant works unchanged). Each
tower is pooled to u and v, and LRA's "NLI" interaction head classifies
[u, v, u * v, u - v] with Dense(mlp) -> ReLU -> Dense(mlp / 2) -> ReLU -> Dense(classes).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from models import heads
from models.blocks import Encoder


def interaction_features(u, v):
  """LRA's NLI-style interaction: concat [u, v, u*v, u-v] -> `[b, 4d]`."""
  return jnp.concatenate([u, v, u * v, u - v], axis=-1)


class DualEncoderHead(nn.Module):
  """Dense(mlp) -> ReLU -> Dense(mlp // 2) -> ReLU -> Dense(classes) on the interaction."""
  num_classes: int
  mlp_dim: int

  @nn.compact
  def __call__(self, u, v):
    h = nn.relu(nn.Dense(self.mlp_dim, name="hidden")(interaction_features(u, v)))
    h = nn.relu(nn.Dense(self.mlp_dim // 2, name="hidden2")(h))
    return nn.Dense(self.num_classes, name="logits")(h)


class DualEncoderClassifier(nn.Module):
  """batch with `inputs`/`mask` and `inputs2`/`mask2` -> (logits `[b, classes]`, aux)."""
  encoder: Encoder
  num_classes: int
  mlp_dim: int
  pooling: str = "CLS"

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
    logits = DualEncoderHead(self.num_classes, self.mlp_dim, name="head")(u, v)
    return logits, {"pooled": u, "pooled2": v}
