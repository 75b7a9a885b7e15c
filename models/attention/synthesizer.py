"""Synthesizer (Tay et al. 2021, "Synthesizer: Rethinking Self-Attention in Transformer Models").

Attention weights are synthesised instead of computed from query-key dot products; the
values are still G(X) = V. Y = softmax(B) V with, per head (sec. 3):
  dense             B_i = W2 relu(W1 X_i + b1) + b2   (sec. 3.1; one row of length n per token)
  factorized_dense  B_i = tile(H_A(X_i), b) * repeat(H_B(X_i), a), a * b >= n   (sec. 3.2)
  random            B = R, a learned (or fixed: trainable=False) [n, n] matrix   (sec. 3.1)
  factorized_random B = R1 R2^T with R1, R2 of rank `k`   (sec. 3.2)
  mixture           B = sum_i alpha_i S_i, alpha = softmax(learned) summing to one, over
                    `mixture` modes and, with `with_dot_product`, Q K^T / sqrt(d) (sec. 3.3)
n is `max_len` rows by `kv_max_len` columns; shorter inputs use the leading block. Padded keys
are masked before the softmax; the causal form masks the synthesised logits. Quadratic by
design (the [L, L] logits are the method), so registered subquadratic=False.

The LRA repository's default "Synthesizer" is random logits *added* to dot-product logits
(`ignore_dot_product=False`); here that is mode="mixture", mixture=("random",),
with_dot_product=True (a learned weighted sum, as the paper's sec. 3.3, not a plain sum).

Incremental decoding (`decode=True`, registry kind "kv"): token i's logits are its own row of
B (dense: from X_i alone; random: row i of R, or of R1 R2^T), so a step needs only the past
values `[b, L, kv_heads, d]` (and the past keys for the mixture's Q K^T term): row i over
positions j <= i, the same masked softmax as the causal full forward.
"""
from __future__ import annotations

import math
import zlib
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, kv_cache, masks
from models.attention.registry import register

MODES = ("dense", "factorized_dense", "random", "factorized_random")
DENSE_MODES = ("dense", "factorized_dense")


def mix_logits(logits: Sequence[jax.Array], weight_logits):
  """Sec. 3.3: sum_i alpha_i S_i with alpha = softmax(weight_logits) (so sum alpha = 1)."""
  alpha = jax.nn.softmax(weight_logits)
  return sum(a * s for a, s in zip(alpha, logits)), alpha


def synthesized_attention(logits, v, *, q_mask=None, kv_mask=None, causal=False,
                          dropout_rate=0.0, dropout_rng=None, deterministic=True):
  """Pure function. logits `[b or 1, h, lq, lk]`, v `[b, lk, h, d]` -> `[b, lq, h, d]`."""
  logits = jnp.broadcast_to(logits, (v.shape[0],) + logits.shape[1:])
  bias = masks.padding_bias(q_mask, kv_mask, logits.dtype)
  if bias is not None:
    logits = logits + bias
  if causal:
    logits = logits + masks.causal_bias(logits.shape[2], logits.shape[3], logits.dtype)
  weights = jax.nn.softmax(logits, axis=-1)
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  if kv_mask is not None:
    v = jnp.where(kv_mask[:, :, None, None], v, 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  return masks.zero_padded_queries(out.astype(v.dtype), q_mask)   # logits may be float32


@register("synthesizer", causal=True, cross=True, needs_max_len=True, subquadratic=False,
          rope=False, decode="kv")  # synthesised logits; with_dot_product mixes in q.k, still no RoPE
class SynthesizerAttention(nn.Module):
  """Synthesised attention; dense modes read `inputs_q` (the un-projected query input)."""
  causal: bool = False
  dropout_rate: float = 0.0
  max_len: int | None = None
  kv_max_len: int | None = None
  mode: str = "random"           # LRA's synthesizer_mode default
  trainable: bool = True         # random modes: learned R, or a fixed random R (False)
  k: int = 32                    # rank of factorized_random (LRA's k)
  mixture: Sequence[str] = ("dense", "random")   # modes mixed when mode="mixture"
  with_dot_product: bool = False  # mixture: also mix in Q K^T / sqrt(d)
  seed: int = 0                  # fixed random matrices (trainable=False)

  def _check(self, lq, lk, inputs_q):
    modes = tuple(self.mixture) if self.mode == "mixture" else (self.mode,)
    for mode in modes:
      if mode not in MODES:
        raise ValueError(f"synthesizer mode {mode!r} (config.model.attention_kwargs); expected "
                         f"one of {MODES + ('mixture',)}")
    if self.mode == "mixture" and (len(set(modes)) != len(modes) or
                                   len(modes) + int(self.with_dot_product) < 2):
      raise ValueError(f"synthesizer mode='mixture' mixes distinct modes; got mixture={modes}, "
                       f"with_dot_product={self.with_dot_product} (need two or more terms)")
    if self.max_len is None:
      raise ValueError("synthesizer needs max_len (the size of its synthesised matrix)")
    kv_max_len = self.kv_max_len or self.max_len
    if lq > self.max_len or lk > kv_max_len:
      raise ValueError(f"synthesizer got {lq} queries / {lk} keys but max_len={self.max_len}, "
                       f"kv_max_len={kv_max_len}")
    if inputs_q is None and any(m in DENSE_MODES for m in modes):
      raise ValueError(f"synthesizer mode {self.mode!r} synthesises weights from inputs_q (the "
                       "un-projected query input), but the mixer was called with inputs_q=None")
    return modes, kv_max_len

  def _random_matrix(self, name, shape):
    init = nn.initializers.xavier_uniform(batch_axis=(0,))   # as the LRA code's kernel_init
    if self.trainable:
      return self.param(name, init, shape)
    path = "/".join(str(part) for part in self.scope.path) + "/" + name
    key = jax.random.fold_in(jax.random.key(self.seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)
    return init(key, shape)   # fixed: param-free, the same every call

  def _synthesise(self, mode, inputs_q, heads, head_dim, lq, lk, kv_max_len, row=None):
    """Logits `[b or 1, h, lq, lk]` of one mode; `row` (decoding, lq = 1): the query's
    position, the row of a random matrix to read (traced)."""
    if mode in DENSE_MODES:   # F(X) = W2 relu(W1 X + b1) + b2 per head, from the query side
      hidden = nn.relu(nn.DenseGeneral((heads, head_dim), name=f"{mode}_hidden")(inputs_q))
      if mode == "dense":
        return self._dense_rows(hidden, kv_max_len, "dense_out")[..., :lk]
      a = math.ceil(math.sqrt(kv_max_len))
      b = math.ceil(kv_max_len / a)
      h_a = self._dense_rows(hidden, a, "factor_a")    # [b, h, lq, a]
      h_b = self._dense_rows(hidden, b, "factor_b")    # [b, h, lq, b]
      # tile H_A b times and repeat H_B a times: entry j = H_A[j % a] * H_B[j // a]
      rows = (h_b[..., :, None] * h_a[..., None, :]).reshape(h_a.shape[:3] + (a * b,))
      return rows[..., :lk]
    if mode == "random":
      matrix = self._random_matrix("random", (heads, self.max_len, kv_max_len))
      rows = matrix[:, :lq] if row is None else jax.lax.dynamic_slice_in_dim(matrix, row, 1, 1)
      return rows[None, :, :, :lk]
    r1 = self._random_matrix("random_1", (heads, self.max_len, self.k))
    r2 = self._random_matrix("random_2", (heads, kv_max_len, self.k))
    rows = r1[:, :lq] if row is None else jax.lax.dynamic_slice_in_dim(r1, row, 1, 1)
    return jnp.einsum("hqr,hkr->hqk", rows, r2[:, :lk])[None]

  def _dense_rows(self, hidden, width, name):
    """Per-head Dense: `[b, lq, h, e]` -> `[b, h, lq, width]`."""
    heads, head_dim = hidden.shape[-2:]
    kernel = self.param(f"{name}_kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                        (heads, head_dim, width))
    bias = self.param(f"{name}_bias", nn.initializers.zeros, (heads, width))
    return jnp.einsum("bqhe,hen->bhqn", hidden, kernel) + bias[None, :, None, :]

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if decode:
      stepping, index = decoding.decode_index(self)
      dot = self.mode == "mixture" and self.with_dot_product
      keys, values = kv_cache.full_cache(self, k, v, stepping, index, keys=dot)
      if stepping:
        return self._decode(q, keys, values, index, inputs_q)
      k, v = decoding.repeat_kv(k, q.shape[2]), decoding.repeat_kv(v, q.shape[2])
    b, lq, heads, head_dim = q.shape
    lk = k.shape[1]
    modes, kv_max_len = self._check(lq, lk, inputs_q)
    logits = [self._synthesise(mode, inputs_q, heads, head_dim, lq, lk, kv_max_len)
              for mode in modes]
    if self.mode == "mixture":
      if self.with_dot_product:
        logits.append(jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype))
      logits = [jnp.broadcast_to(s, (b, heads, lq, lk)) for s in logits]
      weight_logits = self.param("mixture_logits", nn.initializers.zeros, (len(logits),))
      mixed, alpha = mix_logits(logits, weight_logits)
      self.sow("intermediates", "mixture_weights", alpha)
    else:
      mixed = logits[0]
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return synthesized_attention(mixed, v, q_mask=q_mask, kv_mask=kv_mask, causal=self.causal,
                                 dropout_rate=self.dropout_rate, dropout_rng=rng,
                                 deterministic=deterministic)

  def _decode(self, q, keys, values, index, inputs_q):
    """Token at position `index`: its row of the synthesised logits over positions <= index."""
    decoding.check_one_token(q, "synthesizer")
    b, _, heads, head_dim = q.shape
    length = values.shape[1]
    modes, kv_max_len = self._check(1, length, inputs_q)
    logits = [self._synthesise(mode, inputs_q, heads, head_dim, 1, length, kv_max_len,
                               row=index) for mode in modes]
    if self.mode == "mixture":
      if self.with_dot_product:
        keys = decoding.repeat_kv(keys, heads)
        logits.append(jnp.einsum("bqhd,bkhd->bhqk", q, keys)
                      / jnp.sqrt(head_dim).astype(q.dtype))
      logits = [jnp.broadcast_to(s, (b, heads, 1, length)) for s in logits]
      weight_logits = self.param("mixture_logits", nn.initializers.zeros, (len(logits),))
      mixed, alpha = mix_logits(logits, weight_logits)
      self.sow("intermediates", "mixture_weights", alpha)
    else:
      mixed = jnp.broadcast_to(logits[0], (b, heads, 1, length))
    allowed = (jnp.arange(length) <= index)[None, None]
    return kv_cache.weighted_values(mixed[:, :, 0], values, allowed, mixed.dtype, values.dtype)
