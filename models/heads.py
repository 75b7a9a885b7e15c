"""Task heads on top of the shared encoder."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def pool(hidden, mask, method: str):
  """`[b, l, d]` -> `[b, d]`. CLS takes position 0 (the prepended token); MEAN averages
  the unpadded positions only."""
  if method == "CLS":
    return hidden[:, 0]
  if method == "MEAN":
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
  raise ValueError(f"config.model.pooling={method!r}; expected 'CLS' or 'MEAN'")


class ClassifierHead(nn.Module):
  """LRA's head: Dense(mlp) -> ReLU -> Dense(classes) on the pooled vector."""
  num_classes: int
  mlp_dim: int

  @nn.compact
  def __call__(self, pooled):
    h = nn.relu(nn.Dense(self.mlp_dim, name="hidden")(pooled))
    return nn.Dense(self.num_classes, name="logits")(h)
