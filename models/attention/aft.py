"""Attention Free Transformer (Zhai, Talbott, Srivastava, Huang, Goh, Zhang and Susskind 2021,
"An Attention Free Transformer", arXiv 2105.14103), sec. 3.

AFT-full (eq. 2), per feature f (elementwise over the feature axis; no q.k dot product):
    Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w_{t,t'}) V_t' / sum_t' exp(K_t' + w_{t,t'})
with learned pair-wise position biases w. Implemented here:
- `mode="simple"` (AFT-simple, eq. 4, s = 0): no w; Y_t = sigmoid(Q_t) * sum_t' softmax(K)_t' V_t'
  with the softmax over t' per feature: O(L d) time and memory.
- `mode="local"` (AFT-local, eq. 3): w_{t,t'} is learned for |t - t'| < s (`window`) and 0
  outside, where the plain exp(K_t') term remains (the global context is not masked). Computed
  in O(L s d) as the global AFT-simple sums plus a windowed correction (exp(w) - 1) exp(K) V over
  the band, blockwise: blocks of c >= s - 1 positions, each query block against its own and
  neighbouring key blocks, the band a [c, 3c] matrix per block (a matmul over the features, as
  exp(w) carries no feature index).
- w is per absolute pair (t, t'), as the paper's w in R^{T x T} (eq. 2) restricted to the band
  (eq. 3): a parameter [max_len, 2s - 1] (offsets t' - t from -(s-1) to s-1; causal: [max_len,
  s], offsets <= 0), hence `needs_max_len`. The paper's relative (shared) form is AFT-conv, not
  implemented. Initialised to 0 (AFT-local starts as AFT-simple). The paper's factorised
  w = U V^T (for AFT-full's T x T matrix) is not needed for a band of 2s - 1 diagonals.
- Features: the base's q/k/v projections are AFT's Q, K, V; the heads * head_dim axes together
  are AFT's feature dimension (heads play no role); the base's output projection follows.
- Causal form (sec. 3, "causal" AFT for autoregressive modelling): sums over t' <= t, computed
  by an associative scan over (running max, numerator, denominator), stable in float32; the
  local correction uses per-block references (the running max at the block's end).

Numerics: exp(K) is taken after subtracting the per-feature maximum of K over real keys
(non-causal) or the running maximum (causal); bfloat16 inputs compute in float32 and return
bfloat16. Padded keys are excluded from every sum; outputs at padded queries are zero. With
very negative w the windowed correction cancels most of the global sum (a difference of
positive sums): relative error grows as the kept mass shrinks; the denominator is floored so
that it never divides by zero. In the causal local form the band's correction for query block i
is taken relative to the running max at the block's end: a key later in the same block whose K
exceeds the running max at t by more than 80 (per feature) makes the correction for t underflow
(the reference exponent is clipped at 80 so nothing overflows); the global causal sums stay exact.
Not reachable with K of ordinary size.

No attention dropout: AFT forms no attention weights (the paper drops none), so the mixer has no
`dropout_rate` and a nonzero rate is refused.

Incremental decoding (causal; the registry's decode="window", the kind of the default
AFT-local): the causal sums of eq. 4 are a running state, (running max, sum e^{K-max} V,
sum e^{K-max}) per feature, float32 `[b, kv_features]` each, carried by the same associative
step as the full form; AFT-local adds a window cache of the last `window` keys and values
(`[b, window, kv_heads, d]`, the input dtype) for the band of eq. 3, read with row t of the
position biases. AFT-simple (or window 0) keeps only the running state: constant size either
way. The state holds the key/value heads (num_kv_heads): K and V enter AFT per feature, so a
query head reads the sums of the key/value head it shares.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, masks
from models.attention.registry import register

MODES = ("simple", "local")
_MAX_SCALE = 80.0   # exp(80) is finite in float32


def _block_len(window: int) -> int:
  return max(window - 1, 8)


def band_weights(w_band, length: int, window: int, causal: bool):
  """A = exp(w) - 1 on the band |t - t'| < window (causal: t - window < t' <= t), blockwise:
  `[n, c, nb * c]` for query block i (positions i*c + a) against key positions (i-1)*c + j.
  w_band: `[max_len, 2*window - 1]` (causal `[max_len, window]`), column = t' - t + window - 1."""
  c = _block_len(window)
  n = -(-length // c)
  nb = 2 if causal else 3
  t = jnp.arange(n)[:, None, None] * c + jnp.arange(c)[None, :, None]          # [n, c, 1]
  t_key = (jnp.arange(n)[:, None, None] - 1) * c + jnp.arange(nb * c)[None, None, :]
  offset = t_key - t                                                         # [n, c, nb*c]
  inside = (jnp.abs(offset) < window) & (t_key >= 0) & (t_key < length) & (t < length)
  if causal:
    inside &= offset <= 0
  column = jnp.clip(offset + window - 1, 0, w_band.shape[1] - 1)
  w = w_band[jnp.clip(t, 0, length - 1), column].astype(jnp.float32)
  return jnp.where(inside, jnp.expm1(w), 0.0)


def _key_blocks(x, c: int, nb: int, fill=0.0):
  """x `[b, l, F]` -> `[b, n, nb*c, F]`: for query block i, key positions (i-1)*c ... (i-1+nb)*c
  (`fill` outside the sequence)."""
  b, l, f = x.shape
  n = -(-l // c)
  x = jnp.pad(x, ((0, 0), (c, (n + 2) * c - l - c), (0, 0)), constant_values=fill)
  x = x.reshape(b, n + 2, c, f)
  return jnp.concatenate([x[:, j:j + n] for j in range(nb)], axis=2)


def _band_apply(a, x, c: int, causal: bool):
  """sum_t' A_{t,t'} x_t' for the band matrix A (`band_weights`): `[b, l, F]` -> `[b, n*c, F]`."""
  keys = _key_blocks(x, c, 2 if causal else 3)
  out = jnp.einsum("nqk,bnkf->bnqf", a, keys)
  return out.reshape(x.shape[0], -1, x.shape[2])


def _combine(left, right):
  """Associative step of the causal sums: (running max, sum e^{K-max} V, sum e^{K-max})."""
  (ma, na, da), (mb, nb, db) = left, right
  m = jnp.maximum(ma, mb)
  safe = jnp.where(jnp.isfinite(m), m, 0.0)
  sa = jnp.where(jnp.isneginf(ma), 0.0, jnp.exp(ma - safe))
  sb = jnp.where(jnp.isneginf(mb), 0.0, jnp.exp(mb - safe))
  return m, na * sa + nb * sb, da * sa + db * sb


def aft_attention(q, k, v, w_band=None, *, q_mask=None, kv_mask=None, window: int = 0,
                  causal: bool = False):
  """Pure function. q, k, v `[b, l, h, d]` (one length: self-attention), masks bool `[b, l]`;
  `w_band` the local biases (`band_weights`), None or window 0 for AFT-simple."""
  b, l, h, d = q.shape
  flat = lambda x: x.reshape(b, l, h * d).astype(jnp.float32)
  qf, kf, vf = flat(q), flat(k), flat(v)
  valid = (jnp.ones((b, l), bool) if kv_mask is None else kv_mask.astype(bool))[..., None]
  k_real = jnp.where(valid, kf, -jnp.inf)
  local = w_band is not None and window > 0
  c = _block_len(window)
  if not causal:
    top = jnp.max(k_real, axis=1, keepdims=True)                # per-feature max, real keys
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    e = jnp.where(valid, jnp.exp(kf - top), 0.0)                # [b, l, F]
    num = jnp.sum(e * vf, axis=1, keepdims=True)                # eq. 4's sums
    den = jnp.sum(e, axis=1, keepdims=True)
    if local:   # eq. 3: + sum over the band of (exp(w) - 1) exp(K) V
      a = band_weights(w_band, l, window, causal=False)
      num = num + _band_apply(a, e * vf, c, False)[:, :l]
      den = den + _band_apply(a, e, c, False)[:, :l]
  else:
    ones = jnp.broadcast_to(jnp.where(valid, 1.0, 0.0), kf.shape)
    running, num, den = jax.lax.associative_scan(_combine, (k_real, vf * ones, ones), axis=1)
    if local:
      a = band_weights(w_band, l, window, causal=True)
      n = a.shape[0]
      running_p = jnp.pad(running, ((0, 0), (0, n * c - l), (0, 0)), mode="edge")
      block_ref = running_p.reshape(b, n, c, -1)[:, :, -1]          # max at each block's end
      block_ref = jnp.where(jnp.isfinite(block_ref), block_ref, 0.0)   # [b, n, F]
      keys = _key_blocks(k_real, c, 2, fill=-jnp.inf)                # [b, n, 2c, F]
      values = _key_blocks(vf * ones, c, 2)
      e = jnp.where(jnp.isneginf(keys), 0.0, jnp.exp(keys - block_ref[:, :, None]))
      corr_num = jnp.einsum("nqk,bnkf->bnqf", a, e * values)
      corr_den = jnp.einsum("nqk,bnkf->bnqf", a, e)
      here = jnp.where(jnp.isfinite(running_p), running_p, 0.0).reshape(b, n, c, -1)
      scale = jnp.exp(jnp.minimum(block_ref[:, :, None] - here, _MAX_SCALE))
      num = num + (corr_num * scale).reshape(b, n * c, -1)[:, :l]
      den = den + (corr_den * scale).reshape(b, n * c, -1)[:, :l]
  tiny = jnp.finfo(jnp.float32).tiny
  mixed = jnp.where(den > 0, num / jnp.maximum(den, tiny), 0.0)
  out = (jax.nn.sigmoid(qf) * mixed).reshape(b, l, h, d)
  return masks.zero_padded_queries(out.astype(q.dtype), q_mask)


@register("aft", causal=True, cross=False, needs_max_len=True, rope=False,
          decode="window")
class AFTAttention(nn.Module):
  """AFT-simple or AFT-local over the base's Q, K, V (features = heads * head_dim)."""
  mode: str = "local"   # "simple" (eq. 4) or "local" (eq. 3)
  window: int = 32      # s of AFT-local: biases learned where |t - t'| < s
  causal: bool = False
  max_len: int | None = None

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if self.mode not in MODES:
      raise ValueError(f"aft attention_kwargs.mode={self.mode!r}; expected one of {MODES}")
    if self.window < 0:
      raise ValueError(f"aft attention_kwargs.window={self.window} must be >= 0")
    length = q.shape[1]
    if k.shape[1] != length:
      raise ValueError(f"attention 'aft' is self-attention: query length {length} != key "
                       f"length {k.shape[1]}")
    w_band = None
    if self.mode == "local" and self.window > 0:
      if self.max_len is None or length > self.max_len:
        raise ValueError(f"aft mode='local' learns biases per position up to max_len="
                         f"{self.max_len}; got length {length}")
      columns = self.window if self.causal else 2 * self.window - 1
      w_band = self.param("position_bias", nn.initializers.zeros, (self.max_len, columns),
                          jnp.float32)
    if decode:
      return self._decode(q, k, v, w_band)
    return aft_attention(q, k, v, w_band, q_mask=q_mask, kv_mask=kv_mask, window=self.window,
                         causal=self.causal)

  def _decode(self, q, k, v, w_band):
    """Incremental decoding (decoding.py); k/v have the base's key/value heads."""
    if not self.causal:
      raise ValueError("aft decode=True needs the causal form")
    stepping, index = decoding.decode_index(self)
    b, _, kv_heads, d = k.shape
    heads = q.shape[2]
    features = kv_heads * d
    running = self.variable("cache", "running_max",
                            lambda: jnp.full((b, features), -jnp.inf, jnp.float32))
    numerator = self.variable("cache", "numerator", lambda: jnp.zeros((b, features), jnp.float32))
    denominator = self.variable("cache", "denominator",
                                lambda: jnp.zeros((b, features), jnp.float32))
    local = w_band is not None and self.window > 0
    if local:   # the last `window` keys and values: slot j holds position index - window + 1 + j
      window_cache = lambda x: (lambda: jnp.zeros((b, self.window, kv_heads, d), x.dtype))
      keys = self.variable("cache", "keys", window_cache(k))
      values = self.variable("cache", "values", window_cache(v))
    if not stepping:   # the cache-creating call: the causal full forward
      return aft_attention(q, decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads), w_band,
                           window=self.window, causal=True)
    decoding.check_one_token(q, "attention 'aft'")
    flat = lambda x: x.reshape(x.shape[0], -1, features).astype(jnp.float32)
    k_t, v_t = flat(k)[:, 0], flat(v)[:, 0]
    # eq. 4's causal sums, one more key: the full form's associative step
    top, num, den = _combine((running.value, numerator.value, denominator.value),
                             (k_t, v_t, jnp.ones_like(k_t)))
    running.value, numerator.value, denominator.value = top, num, den
    if local:   # eq. 3: + sum over the band t - window < t' <= t of (exp(w) - 1) e^{K-max} V
      keys.value = jnp.concatenate([keys.value[:, 1:], k.astype(keys.value.dtype)], axis=1)
      values.value = jnp.concatenate([values.value[:, 1:], v.astype(values.value.dtype)], axis=1)
      slots = index - (self.window - 1) + jnp.arange(self.window)
      inside = slots >= 0
      # row t of the biases; column j is offset j - (window - 1), i.e. slot j (band_weights)
      w = jax.lax.dynamic_index_in_dim(w_band, index, axis=0, keepdims=False)
      a = jnp.where(inside, jnp.expm1(w.astype(jnp.float32)), 0.0)           # [window]
      exponent = jnp.where(inside[None, :, None], flat(keys.value) - top[:, None], -jnp.inf)
      e = jnp.exp(exponent)                      # every band key is <= the running max: <= 1
      num = num + jnp.einsum("w,bwf->bf", a, e * flat(values.value))
      den = den + jnp.einsum("w,bwf->bf", a, e)
    tiny = jnp.finfo(jnp.float32).tiny
    mixed = jnp.where(den > 0, num / jnp.maximum(den, tiny), 0.0).reshape(b, 1, kv_heads, d)
    out = jax.nn.sigmoid(q.astype(jnp.float32)) * decoding.repeat_kv(mixed, heads)
    return out.astype(q.dtype)
