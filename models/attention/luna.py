"""Luna (Ma, Kong, Wang, Zhou, May, Ma & Zettlemoyer, NeurIPS 2021, "Luna: Linear Unified Nested
Attention"), the bidirectional (encoder) Luna attention, sec. 3.

A Luna layer reads two sequences, X `[n, d]` and an extra packed sequence P `[l, d]`:
  Y_P = Attn(P, X)                  pack: P's rows query X (padded tokens masked), O(l n)
  Y_X = Attn(X, Y_P)                unpack: X queries the packed context, O(l n)
  X_A = LN(Y_X + X),  P_A = LN(Y_P + P)                                          (eq. 5-6)
  X'  = LN(FFN(X_A) + X_A),  P' = P_A                                            (eq. 7)
Attn is multi-head softmax attention with its own projections. Here the mixer computes Y_X
(returned as `y`; the shared block adds the residual, its norm and the FFN: with
`config.model.prenorm=False` it computes X_A and X' exactly as eq. 5-7) and P' (returned as the
next block's memory). Call: `mixer(x, mask, memory=p, deterministic=...)` -> `(y, next_p)`.

The authors' code (XuezheMax/fairseq-apollo, fairseq/modules/luna_attention.py
LunarMultiheadAttention, luna_sentence_encoder.py LunaSentenceEncoderLayer, and
fairseq/models/lra/luna_lra_encoder.py with the LRA architectures in fairseq/models/lra/model.py)
fixes the details followed here:
  * Projections: pack has its own query projection of P and key/value projections of X
    (pq_proj, pk_proj, pv_proj), unpack its own query of X and key/value of Y_P (q_proj, k_proj,
    v_proj) and an output projection (out_proj); Y_P is the heads' concatenation without an
    output projection. `tie_kv=True` is the code's option of one projection for key and value
    (pc_proj, c_proj); the LRA model builds it with tie_kv=False (the default here). All with
    bias; q/k/v kernels Xavier-uniform with gain 1/sqrt(2), out_proj Xavier-uniform, out bias 0.
  * Scaling 1/sqrt(head_dim) in both attentions; softmax in both (the bidirectional Luna: the
    softplus feature map in the code is LunarCausalAttention's, the causal form, not built
    here); the same attention-dropout rate on both weight matrices.
  * P for the first layer (sec. 3: "a learnable positional embedding"): the code's
    projected_embeddings E `[l, d]` ~ N(0, d^-1/2), scaled by sqrt(d) with sinusoidal positions
    added (LRA: encoder_learned_pos=False, so embed_scale = sqrt(d) and projected_positions),
    then LayerNorm (layernorm_embedding = encoder_normalize_before = True in every
    transformer_lra_* architecture Luna inherits); broadcast over the batch. Only the block
    called with `memory=None` (the first) creates it.
  * Dynamic projection (LunaLRAEncoder dynamic_projection=True, the default): an example of
    n < l real tokens uses only P's first n rows; rows j >= n are masked as unpack keys in every
    layer (px_padding_mask). They are still computed and carried (and never read).
  * P' = LN(Dropout(Y_P) + P) with the layer's residual dropout (`packed_dropout_rate`; the
    code's args.dropout, which the configs set to the model's dropout rate).

Deviations: (1) the code's LRA layers are post-norm (normalize_before=False) on both streams;
here the X stream follows `config.model.prenorm` (the luna configs set it False) and the P
stream is always post-norm, P' = LN(Y_P + P) (eq. 6). (2) The code's sentence encoder zeroes
P's masked rows at the embedding; here they stay (they are never read). (3) Dense biases start
at 0 (PyTorch's default bias init is uniform; the code resets only out_proj's bias).
(4) `apply_bert_init` (N(0, 0.02) for every Linear, used by the ListOps and Text architectures)
is not applied. Computation in float32; outputs in x's dtype. Complexity O(n l) time and memory,
never an [n, n] array.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.registry import register

QKV_INIT = nn.initializers.variance_scaling(0.5, "fan_avg", "uniform")  # xavier, gain 1/sqrt 2
OUT_INIT = nn.initializers.xavier_uniform()


def softmax_attention(q, k, v, key_mask=None, dropout=None):
  """Multi-head softmax attention `[b, lq, h, dh]` x `[b, lk, h, dh]` -> `[b, lq, h, dv]`,
  scaled by dh^-1/2; `key_mask` bool `[b, lk]` (or `[b, 1, 1, lk]`-broadcastable) removes keys;
  a query with no key left gets zeros (no NaN). `dropout(weights)` if given. float32 weights."""
  scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
  scores = scores * q.shape[-1] ** -0.5
  if key_mask is not None:
    valid = key_mask[:, None, None, :]
    scores = jnp.where(valid, scores, -jnp.inf)
    any_valid = jnp.any(valid, axis=-1, keepdims=True)
    weights = jax.nn.softmax(jnp.where(any_valid, scores, 0.0), axis=-1)
    weights = jnp.where(valid, weights, 0.0)
  else:
    weights = jax.nn.softmax(scores, axis=-1)
  if dropout is not None:
    weights = dropout(weights)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(jnp.float32))


def sinusoidal_positions(length: int, dim: int):
  """fairseq's get_sinusoidal_positional_embedding: [sin | cos] halves, timescale
  10000^(-i/(half-1)); a zero column for odd dims."""
  half = dim // 2
  rate = math.log(10000.0) / max(half - 1, 1)
  freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -rate)
  angles = jnp.arange(length, dtype=jnp.float32)[:, None] * freqs[None, :]
  emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros((length, 1), jnp.float32)], axis=1)
  return emb


def packed_key_mask(mask, packed_length: int, dynamic: bool):
  """Which rows of P are unpack keys `[b, l]`: all, or (dynamic projection) the first n_i for an
  example of n_i real tokens."""
  batch = mask.shape[0]
  if not dynamic:
    return jnp.ones((batch, packed_length), bool)
  lengths = mask.sum(axis=-1)
  return jnp.arange(packed_length)[None, :] < lengths[:, None]


def luna_attention(x, p, mask, params, *, num_heads, dynamic_projection=True, dropout=None):
  """Pack and unpack (sec. 3) with given projection matrices; the maths without flax.

  x `[b, n, d]`, p `[b, l, d]`, mask bool `[b, n]`; `params` maps pq, pk, pv, q, k, v, out to
  (kernel `[d, d]`, bias `[d]`) (tie_kv: pk = pv and k = v). Returns (Y_X `[b, n, d]` before any
  padding is zeroed, Y_P `[b, l, d]`)."""
  batch, n, d = x.shape
  heads = lambda a: a.reshape(a.shape[0], a.shape[1], num_heads, d // num_heads)
  dense = lambda name, a: a @ params[name][0] + params[name][1]
  # Pack: Y_P = Attn(P, X), padded tokens masked as keys.
  y_p = softmax_attention(heads(dense("pq", p)), heads(dense("pk", x)), heads(dense("pv", x)),
                          mask, dropout).reshape(batch, -1, d)
  # Unpack: Y_X = Attn(X, Y_P), P's unused rows masked (dynamic projection).
  keys = packed_key_mask(mask, p.shape[1], dynamic_projection)
  y_x = softmax_attention(heads(dense("q", x)), heads(dense("k", y_p)), heads(dense("v", y_p)),
                          keys, dropout).reshape(batch, n, d)
  return dense("out", y_x), y_p


@register("luna", causal=False, cross=False, kind="sequence", memory=True)
class Luna(nn.Module):
  """Luna's pack/unpack attention; returns `(Y_X, P')` (see the module docstring)."""
  packed_length: int = 256   # l: the paper's Luna-256 LRA row (16, 128 also reported)
  num_heads: int = 8         # heads of both attentions (the code: num_pheads = num_heads);
                             # in a model: config.model.num_heads (a context field)
  tie_kv: bool = False       # one projection for key and value (LRA model: False)
  dynamic_projection: bool = True  # P rows >= an example's length unused (code default)
  packed_dropout_rate: float = 0.0  # residual dropout on Y_P before P' = LN(Y_P + P)
  dropout_rate: float = 0.0  # attention-weight dropout (both attentions)

  def _check(self, d):
    if self.packed_length < 1:
      raise ValueError(f"luna packed_length={self.packed_length}; expected >= 1")
    if self.num_heads < 1 or d % self.num_heads:
      raise ValueError(f"luna num_heads={self.num_heads} does not divide the width {d}")

  @nn.compact
  def __call__(self, x, mask=None, memory=None, deterministic=True):
    batch, n, d = x.shape
    self._check(d)
    if mask is None:
      mask = jnp.ones((batch, n), bool)
    x32 = jnp.where(mask[..., None], x.astype(jnp.float32), 0.0)
    if memory is None:  # the first layer's P: a learned positional embedding (sec. 3)
      table = self.param("packed_embedding", nn.initializers.normal(stddev=d ** -0.5),
                         (self.packed_length, d))
      p = table * math.sqrt(d) + sinusoidal_positions(self.packed_length, d)
      p = nn.LayerNorm(name="packed_embedding_norm")(p)
      p = jnp.broadcast_to(p[None], (batch, self.packed_length, d))
    else:
      if memory.shape != (batch, self.packed_length, d):
        raise ValueError(f"luna: memory of shape {memory.shape}; expected "
                         f"{(batch, self.packed_length, d)} (packed_length={self.packed_length})")
      p = memory.astype(jnp.float32)

    params = {}
    for name in ("pq", "pk", "pv", "q", "k", "v"):
      if self.tie_kv and name in ("pv", "v"):
        continue
      layer_name = {"pk": "pc", "k": "c"}[name] if self.tie_kv and name in ("pk", "k") else name
      params[name] = (self.param(f"{layer_name}_proj_kernel", QKV_INIT, (d, d)),
                      self.param(f"{layer_name}_proj_bias", nn.initializers.zeros, (d,)))
    if self.tie_kv:
      params["pv"], params["v"] = params["pk"], params["k"]
    params["out"] = (self.param("out_proj_kernel", OUT_INIT, (d, d)),
                     self.param("out_proj_bias", nn.initializers.zeros, (d,)))

    dropout = None
    if self.dropout_rate > 0 and not deterministic:
      rate, rng = self.dropout_rate, self.make_rng("dropout")
      rngs = iter(jax.random.split(rng, 2))
      dropout = lambda w: masks.dropout_weights(w, rate, next(rngs))
    y, y_p = luna_attention(x32, p, mask, params, num_heads=self.num_heads,
                            dynamic_projection=self.dynamic_projection, dropout=dropout)
    y_p = nn.Dropout(self.packed_dropout_rate)(y_p, deterministic=deterministic)
    next_p = nn.LayerNorm(name="packed_norm")(y_p + p)                          # eq. 6
    y = jnp.where(mask[..., None], y, 0.0)
    return y.astype(x.dtype), next_p.astype(x.dtype)
