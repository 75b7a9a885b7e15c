"""Task heads on top of the shared encoder (LRA's classifier_head, common_layers.py)."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def pool(hidden, mask, method: str):
  """`[b, l, d]` -> `[b, d]`. CLS takes position 0: the prepended CLS token for single-input
  tasks, the first real token in LRA's dual encoder (models/dual_encoder.py). MEAN averages
  the unpadded positions only. Differs from LRA: its MEAN is jnp.mean over every position,
  padding included; no LRA task that uses MEAN (Pathfinder, Path-X) has padding, so the two
  agree there, and ours keeps a padded input's result independent of the padded length."""
  if method == "CLS":
    return hidden[:, 0]
  if method == "MEAN":
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
  raise ValueError(f"config.model.pooling={method!r}; expected 'CLS' or 'MEAN'")


class ClassifierHead(nn.Module):
  """LRA's head: Dense(mlp) -> ReLU -> Dense(classes) on the pooled vector, with flax's
  default Dense inits (LeCun-normal kernels, zero biases), as LRA's nn.Dense had."""
  num_classes: int
  mlp_dim: int

  @nn.compact
  def __call__(self, pooled):
    h = nn.relu(nn.Dense(self.mlp_dim, name="hidden")(pooled))
    return nn.Dense(self.num_classes, name="logits")(h)
