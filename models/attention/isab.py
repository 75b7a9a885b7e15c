"""ISAB: the Set Transformer's induced set attention block (Lee, Lee, Kim, Kosiorek, Choi & Teh,
ICML 2019, "Set Transformer: A Framework for Attention-based Permutation-Invariant Neural
Networks", sec. 3.1-3.2).

  MAB(X, Y) = LayerNorm(H + rFF(H)),  H = LayerNorm(X + Multihead(X, Y, Y))         (eq. 8)
  ISAB_m(X) = MAB(X, MAB(I, X)),      I `[m, d]` learned inducing points             (eq. 9-10)

Multihead is Vaswani et al.'s: h heads of softmax(Q_j K_j^T / sqrt(d/h)) V_j with their own
q/k/v projections, concatenated and projected by W^O. m inducing points attend to the n tokens
(O(n m)), then the tokens attend to the m results (O(n m)): never an [n, n] array.

How the block is split with the shared encoder block: the mixer computes the inner
H_I = MAB(I, X) whole (eq. 8 with X := I, Y := X: its residual, LayerNorms and rFF) and returns
the outer Multihead(X, H_I, H_I). The outer MAB's residual, LayerNorms and row-wise
feed-forward are the shared block's: with `config.model.prenorm=False` and `ffn="mlp"` the block
computes LN(X + y) then LN(h + FFN(h)) = MAB(X, H_I) exactly, with the block's FFN as rFF (the
paper: "rFF is any row-wise feedforward layer"; tests/test_attention_isab.py checks this
equality with a dense reference of eq. 8-9). With the default pre-norm block the outer MAB is a
pre-norm MAB.

The inner rFF follows the authors' code (juho-lee/set_transformer modules.py MAB):
rFF(H) = relu(H W + b), one Dense of width d. `layer_norm`: the LayerNorms of eq. 8; the code's
MAB has `ln=False` by default (and its scripts run without) but the paper's equation has them,
and a stack of blocks is better conditioned with them: default True (eq. 8). Inducing points
are initialised as the code's (xavier_uniform of a `[1, m, d]` tensor: U(+-sqrt(6 / ((m + 1) d)))).

Deviations from the authors' code (which the paper's equations do not have): the code adds the
residual to the projected query (fc_q(X) + A V rather than X + Multihead), has no output
projection W^O, and scales the scores by 1/sqrt(d) (the whole width) rather than 1/sqrt(d/h); here
the paper's eq. 8 with Vaswani's multi-head attention. Padding: padded tokens never enter
MAB(I, X) as keys; outputs at padded positions are zero. Attention dropout (`dropout_rate`) on
both attentions' weights (the paper has none). float32 inside; outputs in x's dtype.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.luna import softmax_attention
from models.attention.registry import register

PROJECTION_INIT = nn.initializers.xavier_uniform()


def inducing_init(rng, shape):
  """torch.nn.init.xavier_uniform_ of the code's `[1, m, d]` tensor (fan_in m d, fan_out d)."""
  m, d = shape
  bound = math.sqrt(6.0 / ((m + 1) * d))
  return jax.random.uniform(rng, shape, jnp.float32, -bound, bound)


class Multihead(nn.Module):
  """Multihead(Q, K, V) = concat_j softmax(Q W_j^Q (K W_j^K)^T / sqrt(d/h)) V W_j^V, times W^O."""
  num_heads: int

  @nn.compact
  def __call__(self, queries, keys, key_mask, dropout=None):
    d = queries.shape[-1]
    dense = lambda name: nn.DenseGeneral((self.num_heads, d // self.num_heads),
                                         kernel_init=PROJECTION_INIT, name=name)
    out = softmax_attention(dense("query")(queries), dense("key")(keys), dense("value")(keys),
                            key_mask, dropout)
    return nn.DenseGeneral(d, axis=(-2, -1), kernel_init=PROJECTION_INIT, name="out")(out)


class MAB(nn.Module):
  """MAB(X, Y) = LN(H + rFF(H)), H = LN(X + Multihead(X, Y, Y)) (eq. 8); rFF = relu(Dense)."""
  num_heads: int
  layer_norm: bool = True

  @nn.compact
  def __call__(self, x, y, y_mask, dropout=None):
    norm = (lambda name: nn.LayerNorm(name=name)) if self.layer_norm else (lambda name: None)
    apply = lambda layer, a: a if layer is None else layer(a)
    h = apply(norm("norm0"), x + Multihead(self.num_heads, name="attention")(x, y, y_mask,
                                                                            dropout))
    ff = nn.relu(nn.Dense(x.shape[-1], kernel_init=PROJECTION_INIT, name="rff")(h))
    return apply(norm("norm1"), h + ff)


@register("isab", causal=False, cross=False, kind="sequence")
class ISAB(nn.Module):
  """Induced set attention: returns Multihead(X, MAB(I, X)) (see the module docstring)."""
  num_inducing: int = 32     # m (the code's SetTransformer default num_inds=32)
  num_heads: int = 4         # (the code's default num_heads=4); in a model:
                             # config.model.num_heads (a context field)
  layer_norm: bool = True    # eq. 8's LayerNorms in MAB(I, X) (the code's default: ln=False)
  dropout_rate: float = 0.0  # attention-weight dropout (both attentions)

  def _check(self, d):
    if self.num_inducing < 1:
      raise ValueError(f"isab num_inducing={self.num_inducing}; expected >= 1")
    if self.num_heads < 1 or d % self.num_heads:
      raise ValueError(f"isab num_heads={self.num_heads} does not divide the width {d}")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True):
    batch, n, d = x.shape
    self._check(d)
    if mask is None:
      mask = jnp.ones((batch, n), bool)
    x32 = jnp.where(mask[..., None], x.astype(jnp.float32), 0.0)
    dropout = None
    if self.dropout_rate > 0 and not deterministic:
      rate, rngs = self.dropout_rate, iter(jax.random.split(self.make_rng("dropout"), 2))
      dropout = lambda w: masks.dropout_weights(w, rate, next(rngs))
    inducing = self.param("inducing_points", inducing_init, (self.num_inducing, d))
    inducing = jnp.broadcast_to(inducing[None], (batch, self.num_inducing, d))
    # H_I = MAB(I, X): the m points attend to the real tokens only (eq. 9).
    h = MAB(self.num_heads, self.layer_norm, name="induced")(inducing, x32, mask, dropout)
    # The outer MAB(X, H_I)'s attention; its residual, norms and rFF are the block's.
    y = Multihead(self.num_heads, name="attention")(x32, h, None, dropout)
    return jnp.where(mask[..., None], y, 0.0).astype(x.dtype)
