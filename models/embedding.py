"""Token embedding plus sinusoidal or learned positions (LRA's AddPositionEmbs,
lra_benchmarks/models/layers/common_layers.py; the inits are LRA's: tokens normal(1.0),
learned positions normal(0.02), the CLS vector zeros, as in transformer.py)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_table(max_len: int, features: int) -> np.ndarray:
  """LRA's fixed position table `[max_len, features]` (common_layers.sinusoidal_init, after
  Vaswani et al. 2017, sec. 3.5): feature 2i is sin(pos * w_i), feature 2i+1 is cos(pos * w_i),
  with w_i = exp(-2i * log(10000) / features), i.e. sin and cos interleaved, not in halves."""
  table = np.zeros((max_len, features), np.float32)
  pos = np.arange(max_len)[:, None]
  div = np.exp(np.arange(0, features, 2) * -(np.log(10000.0) / features))  # w_i, i < ceil(d/2)
  table[:, 0::2] = np.sin(pos * div)
  # With an odd `features` there is one sin column more than cos columns (LRA's own
  # initialiser fails on odd widths; this is the same table with the last cos dropped).
  table[:, 1::2] = np.cos(pos * div[:features // 2])
  return table


class Embedder(nn.Module):
  """Embeds int tokens `[b, l]`, optionally prepends a learned CLS vector, adds positions."""
  vocab_size: int
  features: int
  max_len: int
  positions: str = "sinusoidal"  # or "learned"
  prepend_cls: bool = False
  dropout_rate: float = 0.0
  dtype: object = jnp.float32

  @nn.compact
  def __call__(self, tokens, mask, deterministic=True, offset=0):
    """`offset`: the position of the first token (incremental decoding: the token's index, a
    traced scalar); 0 otherwise."""
    if tokens.shape[1] > self.max_len:
      raise ValueError(f"input length {tokens.shape[1]} exceeds config.model.max_len="
                       f"{self.max_len}")
    x = nn.Embed(self.vocab_size, self.features, embedding_init=nn.initializers.normal(1.0),
                 dtype=self.dtype, name="tokens")(tokens)
    if self.prepend_cls:
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.features))
      x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.features)).astype(x.dtype),
                           x], axis=1)
      mask = jnp.concatenate([jnp.ones((mask.shape[0], 1), bool), mask], axis=1)
    length = x.shape[1]
    total_len = self.max_len + int(self.prepend_cls)
    window = lambda table: jax.lax.dynamic_slice_in_dim(table, offset, length, axis=1)
    if self.positions == "sinusoidal":
      pos = window(jnp.asarray(sinusoidal_table(total_len, self.features))[None])
    elif self.positions == "learned":
      pos = window(self.param("positions", nn.initializers.normal(0.02),
                              (1, total_len, self.features)))
    elif self.positions == "none":
      pos = 0.0
    else:
      raise ValueError(f"config.model.positions={self.positions!r}; expected 'sinusoidal', "
                       "'learned' or 'none'")
    x = x + pos
    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
    return x, mask
