"""Random Feature Attention (Peng et al. 2021, "Random Feature Attention", ICLR).

Softmax attention is replaced by a random-feature kernel (sec. 2.2, sec. 3, eq. 5):

  RFA(q_t, {k_i}, {v_i}) = phi(q_t)^T sum_i phi(k_i) v_i^T / phi(q_t) . sum_j phi(k_j),

with q and k l2-normalised first (sec. 3: on unit vectors exp(q.k / s^2) is proportional to the
Gaussian kernel exp(-|q - k|^2 / (2 s^2)), which random Fourier features estimate):

  "gaussian" (RFA-Gaussian, Theorem 1):  phi(x) = D^(-1/2) [sin(W x), cos(W x)]     (2D features)
  "arccos"   (RFA-arccos, appendix):     phi(x) = D^(-1/2) ReLU(W x)                 (D features)

W `[D, d]` per head has standard Gaussian rows times a learned per-head, per-dimension scale
sigma (initialised to 1): the authors' `reparam_proj`, their way of learning the kernel's
variance. E[phi(x) . phi(y)] = exp(-|sigma (x - y)|^2 / 2) for the Gaussian map.
Random matrices are redrawn at every training step (the authors sample one per head from a
pre-drawn pool of random matrices each step; here fresh draws from the "dropout" rng: the same
distribution, no pool to store) and fixed in evaluation (from `seed` and the layer's path).
`orthogonal=True` draws block-orthogonal rows (performer's ORF, the authors' "orf" option).

Causal (sec. 3.1, eq. 6): the prefix sums S_t = sum_{i<=t} phi(k_i) v_i^T, z_t = sum phi(k_i).
`gating=True` (causal only, sec. 3.1 "Learning with recency bias", eq. 7): one gate per head from
the layer input x_t (`inputs_q`), g_t = sigmoid(w_g . x_t + b_g),
  S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T,   z_t = g_t z_{t-1} + (1 - g_t) phi(k_t).
Both are computed in chunks of `chunk_size` tokens: a `lax.scan` carries (S, z); inside a chunk
the decays prod_{j<s<=i} g_s are exp of differences of a chunk-local cumulative log-gate (all
<= 0, so exp never overflows) and the [C, C] products are exact. Never an [L, L] array; float32
inside whatever the input dtype. (`feature_maps.causal_linear_attention` does not fit: its key
scales are held constant for the gradient, and the gate needs its gradient; its denominator
guard assumes positive features.)

Denominator: sin/cos features make phi(q) . z indefinite in sign. As the authors' reference
(masked) implementation, |denominator| is clamped below at `eps` (1e-3). No attention weights
exist, so no attention dropout. Cross attention: the same formula over the context (non-causal).

Incremental decoding (decode="state"): the recurrence itself (sec. 3.1, eq. 6; gated, eq. 7),
S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T and z_t likewise (g_t = 1 and no (1 - g_t)
ungated), one token at a time with S, z in the "cache" collection: float32 `[b, heads, D', d]`
and `[b, heads, D']` (D' = 2D for the Gaussian map), whatever the length. The random matrices
are the evaluation draw of the layer (drawn once into the cache), as the deterministic forward.
The state has the query heads: each head has its own random matrix, so a key/value head shared
by several query heads (num_kv_heads) has a different feature map, and state, for each.
"""
from __future__ import annotations

import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from models.attention import decoding, masks, performer
from models.attention.feature_maps import LOG_ZERO
from models.attention.registry import register

FEATURE_MAPS = ("gaussian", "arccos")
NORM_EPS = 1e-3   # the authors' x / (|x| + 1e-3)


def l2_normalise(x):
  """x / (|x| + 1e-3), with a finite gradient at x = 0 (e.g. a padded token's zero embedding:
  the gradient of a plain norm there is 0/0 = NaN, which masking cannot remove)."""
  squared = jnp.sum(x * x, axis=-1, keepdims=True)
  norm = jnp.where(squared > 0, jnp.sqrt(jnp.where(squared > 0, squared, 1.0)), 0.0)
  return x / (norm + NORM_EPS)


def random_features(x, projection, feature_map):
  """phi of l2-normalised x `[b, l, h, d]` with projection `[h, D, d]` -> `[b, l, h, D or 2D]`."""
  logits = jnp.einsum("blhd,hmd->blhm", l2_normalise(x), projection)
  scale = projection.shape[1] ** -0.5
  if feature_map == "gaussian":
    return scale * jnp.concatenate([jnp.sin(logits), jnp.cos(logits)], axis=-1)
  return scale * jax.nn.relu(logits)


def guard(denominator, eps):
  """|den| clamped at eps (the authors' normalize_attn_weights): sin/cos features can make the
  estimate of a positive sum ~0 or negative."""
  return jnp.maximum(jnp.abs(denominator), eps)


def _chunked_causal(phi_q, phi_k, v, log_decay, key_weight, eps, chunk_size):
  """out_t = phi_q_t^T S_t / guard(phi_q_t . z_t) with S_t = a_t S_{t-1} + w_t phi_k_t v_t^T.

  All heads-major `[b, h, l, .]`, float32; log_decay = log a_t, key_weight = w_t `[b, h, l]`.
  """
  b, h, length, m = phi_k.shape
  chunk = max(1, min(chunk_size, length))
  padded = -(-length // chunk) * chunk
  pad = lambda x: jnp.pad(x, [(0, 0), (0, 0), (0, padded - length)] + [(0, 0)] * (x.ndim - 3))
  to_chunks = lambda x: jnp.moveaxis(
      pad(x).reshape((b, h, padded // chunk, chunk) + x.shape[3:]), 2, 0)
  xs = tuple(to_chunks(t) for t in (phi_q, phi_k, v, log_decay, key_weight))
  lower = jnp.tril(jnp.ones((chunk, chunk), bool))

  def step(carry, inputs):
    state, normaliser = carry                       # [b,h,m,d], [b,h,m]
    q_c, k_c, v_c, a_c, w_c = inputs                # [b,h,C,m] x2, [b,h,C,d], [b,h,C] x2
    cum = jnp.cumsum(a_c, axis=-1)                  # chunk-local sum of log a up to i
    # Weight of key j for query i (j <= i): w_j prod_{j<s<=i} a_s = w_j exp(cum_i - cum_j).
    decay = jnp.exp(jnp.where(lower, cum[..., :, None] - cum[..., None, :], LOG_ZERO))
    weights = jnp.einsum("bhim,bhjm->bhij", q_c, k_c) * decay * w_c[..., None, :]
    numerator = weights @ v_c
    denominator = jnp.sum(weights, axis=-1)
    earlier = jnp.exp(cum)                          # decay of the carried state up to i
    numerator += earlier[..., None] * (q_c @ state)
    denominator += earlier * jnp.einsum("bhim,bhm->bhi", q_c, normaliser)
    out = numerator / guard(denominator, eps)[..., None]
    to_end = jnp.exp(cum[..., -1:] - cum) * w_c     # each key's weight at the chunk's end
    state = earlier[..., -1, None, None] * state + jnp.einsum(
        "bhjm,bhjd->bhmd", k_c * to_end[..., None], v_c)
    normaliser = earlier[..., -1, None] * normaliser + jnp.einsum("bhjm,bhj->bhm", k_c, to_end)
    return (state, normaliser), out

  init = (jnp.zeros((b, h, m, v.shape[-1]), jnp.float32), jnp.zeros((b, h, m), jnp.float32))
  _, out = jax.lax.scan(step, init, xs)             # [n, b, h, C, d]
  return rearrange(out, "n b h c d -> b h (n c) d")[:, :, :length]


@functools.partial(jax.jit, static_argnames=("causal", "feature_map", "eps", "chunk_size"))
def rfa_attention(q, k, v, projection, *, gate_logits=None, q_mask=None, kv_mask=None,
                  causal=False, feature_map="gaussian", eps=1e-3, chunk_size=64):
  """Pure function. q `[b, lq, h, d]`, k/v `[b, lk, h, d]`, projection `[h, D, d]` (already
  scaled by sigma), gate_logits `[b, l, h]` (w_g . x + b_g; causal only) or None."""
  if feature_map not in FEATURE_MAPS:
    raise ValueError(f"rfa feature_map={feature_map!r}; expected one of {FEATURE_MAPS}")
  if gate_logits is not None and not causal:
    raise ValueError("rfa gating is defined for the causal form only (sec. 3.1)")
  out_dtype = v.dtype
  q, k, v, projection = (t.astype(jnp.float32) for t in (q, k, v, projection))
  phi_q, phi_k = (random_features(x, projection, feature_map) for x in (q, k))
  keep = jnp.ones(k.shape[:2], bool) if kv_mask is None else kv_mask
  # Padded keys contribute nothing: zero features and values.
  phi_k = jnp.where(keep[:, :, None, None], phi_k, 0.0)
  v = jnp.where(keep[:, :, None, None], v, 0.0)
  phi_q, phi_k, v = (rearrange(t, "b l h m -> b h l m") for t in (phi_q, phi_k, v))
  if causal:
    if q.shape[1] != k.shape[1]:
      raise ValueError("causal rfa needs as many queries as keys")
    if gate_logits is None:   # plain prefix sums: a_t = 1, w_t = 1
      log_decay = jnp.zeros(phi_k.shape[:3], jnp.float32)
      key_weight = jnp.ones(phi_k.shape[:3], jnp.float32)
    else:                     # eq. 7: a_t = g_t, w_t = 1 - g_t
      logits = rearrange(gate_logits.astype(jnp.float32), "b l h -> b h l")
      log_decay, key_weight = jax.nn.log_sigmoid(logits), jax.nn.sigmoid(-logits)
      # A padded key is skipped: no decay, no weight (padding invariance wherever it sits).
      real = rearrange(keep, "b l -> b 1 l")
      log_decay, key_weight = jnp.where(real, log_decay, 0.0), jnp.where(real, key_weight, 0.0)
    out = _chunked_causal(phi_q, phi_k, v, log_decay, key_weight, eps, chunk_size)
  else:
    state = jnp.einsum("bhlm,bhld->bhmd", phi_k, v)    # sum_i phi(k_i) v_i^T
    normaliser = jnp.sum(phi_k, axis=2)               # sum_j phi(k_j)
    out = (phi_q @ state) / guard(phi_q @ normaliser[..., None], eps)
  out = rearrange(out, "b h l d -> b l h d")
  return masks.zero_padded_queries(out, q_mask).astype(out_dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def draw_projection(key, heads, num_features, dim, orthogonal):
  """`[heads, D, dim]` standard Gaussian (or block-orthogonal, chi-normed) rows per head."""
  if not orthogonal:
    return jax.random.normal(key, (heads, num_features, dim))
  keys = jax.random.split(key, heads)
  return jax.vmap(lambda k: performer.random_features(k, num_features, dim))(keys)


@register("rfa", causal=True, cross=True, decode="state")
class RandomFeatureAttention(nn.Module):
  """RFA mixer; `gating` (causal only) reads the layer input `inputs_q`."""
  causal: bool = False
  num_features: int = 64          # D; the authors' default proj_dim (causal/cross_proj_dim)
  feature_map: str = "gaussian"   # "gaussian" (sin/cos) or "arccos" (ReLU)
  learn_sigma: bool = True        # learned per-head, per-dimension scale of W (reparam_proj)
  orthogonal: bool = False        # iid Gaussian rows ("rrf") or orthogonal ("orf")
  gating: bool = False            # eq. 7 recency gate; causal only
  redraw: bool = True             # new random matrices at every training step
  seed: int = 0
  eps: float = 1e-3               # clamp of |denominator|
  chunk_size: int = 64            # causal chunk: speed only, not results

  def __post_init__(self):
    super().__post_init__()
    where = "config.model.attention_kwargs"
    if self.feature_map not in FEATURE_MAPS:
      raise ValueError(f"rfa feature_map={self.feature_map!r} ({where}); expected one of "
                       f"{FEATURE_MAPS}")
    if self.num_features < 1 or self.chunk_size < 1:
      raise ValueError(f"rfa num_features={self.num_features}, chunk_size={self.chunk_size} "
                       f"({where}); expected >= 1")
    if self.gating and not self.causal:
      raise ValueError(f"rfa gating=True ({where}) is the causal form's recency gate (sec. "
                       "3.1); build it causally (config.model.causal) or set gating=False")

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    heads, dim = q.shape[2], q.shape[3]
    if decode:   # the evaluation draw, held in the cache
      draw = self.variable("cache", "projection",
                           lambda: self._draw(heads, dim, deterministic=True)).value
    else:
      draw = self._draw(heads, dim, deterministic)
    projection = jax.lax.stop_gradient(draw)
    if self.learn_sigma:
      sigma = self.param("sigma", nn.initializers.ones, (heads, 1, dim))
      projection = projection * sigma
    gate_logits = None
    if self.gating:
      if inputs_q is None:
        raise ValueError("rfa gating needs the layer input (inputs_q)")
      gate_logits = nn.Dense(heads, name="gate", dtype=jnp.float32)(inputs_q)   # w_g . x + b_g
    if decode:
      return self._decode(q, k, v, projection, gate_logits)
    return rfa_attention(q, k, v, projection, gate_logits=gate_logits, q_mask=q_mask,
                         kv_mask=kv_mask, causal=self.causal, feature_map=self.feature_map,
                         eps=self.eps, chunk_size=self.chunk_size)

  def _draw(self, heads, dim, deterministic):
    if self.redraw and not deterministic:
      key = self.make_rng("dropout")
    else:
      path = "/".join(str(part) for part in self.scope.path)
      key = jax.random.fold_in(jax.random.key(self.seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)
    return draw_projection(key, heads, self.num_features, dim, self.orthogonal)

  def _decode(self, q, k, v, projection, gate_logits):
    """Incremental decoding (decoding.py): eq. 6 / eq. 7 one token at a time."""
    if not self.causal:
      raise ValueError("rfa decode=True needs the causal form")
    stepping, _ = decoding.decode_index(self)
    b, _, heads, _ = q.shape
    k, v = decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads)
    width = projection.shape[1] * (2 if self.feature_map == "gaussian" else 1)
    zeros = lambda *shape: (lambda: jnp.zeros(shape, jnp.float32))
    state = self.variable("cache", "state", zeros(b, heads, width, v.shape[-1]))
    normaliser = self.variable("cache", "normaliser", zeros(b, heads, width))
    if not stepping:   # the cache-creating call: the causal full forward
      return rfa_attention(q, k, v, projection, gate_logits=gate_logits, causal=True,
                           feature_map=self.feature_map, eps=self.eps,
                           chunk_size=self.chunk_size)
    decoding.check_one_token(q, "attention 'rfa'")
    q32, k32, v32, projection = (t.astype(jnp.float32) for t in (q, k, v, projection))
    phi_q, phi_k = (random_features(x, projection, self.feature_map)[:, 0] for x in (q32, k32))
    kv = jnp.einsum("bhm,bhd->bhmd", phi_k, v32[:, 0])
    if gate_logits is None:   # eq. 6: S_t = S_{t-1} + phi(k_t) v_t^T
      new_state, new_normaliser = state.value + kv, normaliser.value + phi_k
    else:                     # eq. 7: S_t = g_t S_{t-1} + (1 - g_t) phi(k_t) v_t^T
      logits = gate_logits[:, 0].astype(jnp.float32)          # [b, heads]
      g, one_minus_g = jax.nn.sigmoid(logits), jax.nn.sigmoid(-logits)
      new_state = g[..., None, None] * state.value + one_minus_g[..., None, None] * kv
      new_normaliser = g[..., None] * normaliser.value + one_minus_g[..., None] * phi_k
    state.value, normaliser.value = new_state, new_normaliser
    numerator = jnp.einsum("bhm,bhmd->bhd", phi_q, new_state)
    denominator = guard(jnp.einsum("bhm,bhm->bh", phi_q, new_normaliser), self.eps)
    return (numerator / denominator[..., None])[:, None].astype(v.dtype)
