"""Mega (Ma et al. 2023, "Mega: Moving Average Equipped Gated Attention"), the MEGA layer (sec. 3).

  X' = EMA(X)                                     multi-dimensional damped EMA (sec. 3.1, eq. 3)
  Z  = silu(X' W_z + b_z);  Q = k_q * Z + b_q;  K = k_k * Z + b_k             (eqs. 7-9)
  V  = silu(X W_v + b_v)                                                        (eq. 10)
  r  = silu(X' W_r + b_r);  phi = sigmoid(X' W_u + b_u)                        (eqs. 14, 15)
  O  = f(Q K^T / ... + b_rel) V   (softmax, laplace or relu^2, sec. 3.2 and 3.4)
  H  = silu(X' W_h + (r * O) U_h + b_h)                                         (eq. 17)
  Y  = phi * H + (1 - phi) * X                                                  (eq. 18)

The authors' code (facebookresearch/mega fairseq/modules/moving_average_gated_attention.py and
exponential_moving_average.py) fixes the details followed here: the EMA parameters are
delta, alpha (squashed by a sigmoid: p = sigmoid(delta), q = 1 - p * sigmoid(alpha)), beta
(expansion), gamma (projection, times sqrt(1/ndim)) and omega (a residual: X' = silu(EMA(X) +
omega * X)); the EMA is a convolution with the kernel k_j = sum_n gamma_n p_n beta_n q_n^j,
computed by FFT at 2L (causal=True: the same EMA as its recurrence by an associative scan,
exactly causal in float arithmetic too); the bidirectional form adds a second kernel run right-to-left (both
including lag 0); W_u, W_z, W_r, W_h come from one projection of X'; the laplace/relu^2
attention divides Q K^T by the number of keys a query sees, softmax scales by z_dim^-1/2; the
relative position bias is the "simple" one (a learned scalar per offset j - i; the code's
default, used by every LRA script); "Mega-chunk" (sec. 3.5) splits the sequence into
non-overlapping chunks of `chunk_size` and attends within each (the EMA still runs over the
whole sequence), with the position bias sized by the chunk.

The gated residual (eq. 18) is written so the shared block's residual gives it: this mixer
returns phi * (H - X), and the block adds X. With `config.model.prenorm=False` (post-norm, the
Mega LRA scripts for ListOps, Text and Retrieval) the block computes norm(X + phi * (H - X)) =
norm(Y) exactly as the authors' layer. With pre-norm the mixer sees norm(X) and returns
phi * (H - norm(X)), so the block gives X + phi * (H - norm(X)), where the authors' layer
gives X + phi * (H - X) (it gates the raw residual, which a mixer cannot see).

Incremental decoding (decode="window", the causal form): the EMA is a recurrence (eq. 3), so
its cache is the state h `[b, d, ndim]` (with a truncation T also the last T inputs, for
h_t = q h_{t-1} + p beta (u_t - q^T u_{t-T})); the attention is causal within chunks, so the cache
holds the current chunk's keys, values and key mask (`[b, c, ...]`, c = chunk_size whatever the
length), the slot of token t is t mod c, and a new chunk's token sees only the slots up to its
own. Bounded by chunk_size; with chunk_size=0 (full attention) the chunk is the whole L and the
cache grows with it, as a KV cache.

Dropout: `dropout_rate` (the context field, config.model.attention_dropout_rate) drops
attention weights; `hidden_dropout_rate` is the code's `dropout` on X' (the EMA output). The
code's second use of that rate, on H before the gate, is the block's residual dropout here.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.special import erf

from models.attention import _history, decoding
from models.attention.registry import register
from models.attention.s4d import fft_conv  # causal: no backward kernel

ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
PROJECTION_INIT = nn.initializers.normal(stddev=0.02)   # reset_parameters: std 0.02, bias 0


def ema_coefficients(delta, alpha):
  """p = sigmoid(delta) (the paper's alpha), q = 1 - p * sigmoid(alpha) (damping)."""
  p = jax.nn.sigmoid(delta)
  return p, 1.0 - p * jax.nn.sigmoid(alpha)


def ema_kernel(delta, alpha, beta, gamma, length, truncation=None):
  """The EMA's convolution kernel `[channels, length]`: k_j = sum_n gamma_n s p_n beta_n q_n^j,
  s = sqrt(1/ndim); zero for j >= truncation (the code's `truncation_length`). Params
  `[channels, ndim]`."""
  p, q = ema_coefficients(delta, alpha)
  steps = jnp.arange(length, dtype=jnp.float32)
  powers = jnp.exp(steps[None, None, :] * jnp.log(q)[..., None])     # [c, n, l]
  scale = math.sqrt(1.0 / delta.shape[-1])
  kernel = jnp.einsum("cn,cnl->cl", p * beta * gamma * scale, powers)
  if truncation:
    kernel = jnp.where(steps < truncation, kernel, 0.0)
  return kernel


def ema_scan(u, delta, alpha, beta, gamma, truncation=None):
  """The left-to-right EMA as its recurrence (eq. 3), h_t = p beta u_t + q h_{t-1}, by
  `jax.lax.associative_scan`: output t is built from inputs <= t only, so the causal form has
  exactly zero gradient from the future (an FFT's round-off leaves ~1e-10). Truncation T:
  sum_{j<T} q^j p beta u_{t-j} = h_t - q^T h_{t-T}. Memory `[b, l, d, ndim]`."""
  p, q = ema_coefficients(delta, alpha)
  length = u.shape[1]
  drive = u.astype(jnp.float32)[..., None] * (p * beta)                       # [b, l, d, n]
  decay = jnp.broadcast_to(q, drive.shape)
  combine = lambda a, b: (a[0] * b[0], b[0] * a[1] + b[1])
  _, state = jax.lax.associative_scan(combine, (decay, drive), axis=1)
  if truncation and truncation < length:
    earlier = jnp.pad(state, [(0, 0), (truncation, 0), (0, 0), (0, 0)])[:, :length]
    state = state - q ** truncation * earlier
  scale = math.sqrt(1.0 / delta.shape[-1])
  return jnp.einsum("bldn,dn->bld", state, gamma * scale)


def ema(u, delta, alpha, beta, gamma, *, bidirectional=False, truncation=None, scan=False):
  """The EMA of u `[b, l, d]` (padding already zeroed). Bidirectional: the first d kernel
  channels run left-to-right, the last d right-to-left, summed (both include lag 0).
  scan=True: the recurrence (`ema_scan`, left to right only) instead of the FFT."""
  d, length = u.shape[-1], u.shape[1]
  if scan:
    if bidirectional:
      raise ValueError("mega: the scan form of the EMA is left-to-right only")
    return ema_scan(u, delta, alpha, beta, gamma, truncation)
  kernel = ema_kernel(delta, alpha, beta, gamma, length, truncation)
  if not bidirectional:
    return fft_conv(u, kernel)
  forward = fft_conv(u, kernel[:d])
  backward = fft_conv(u[:, ::-1], kernel[d:])[:, ::-1]
  return forward + backward


def relative_bias(table, size):
  """The "simple" relative position bias `[size, size]`: bias[i, j] = table[P - 1 + j - i] for
  a table of 2P - 1 learned scalars (SimpleRelativePositionalBias)."""
  positions = (table.shape[0] + 1) // 2
  if size > positions:
    raise ValueError(f"mega: {size} positions but the relative position table covers "
                     f"{positions} (set max_len or chunk_size)")
  offsets = jnp.arange(size)[None, :] - jnp.arange(size)[:, None]
  return table[positions - 1 + offsets]


def laplace(x, mu=0.707107, sigma=0.282095):
  """Sec. 3.4: 0.5 * (1 + erf((x - mu) / (sigma sqrt 2))), mu = sqrt(1/2), sigma = sqrt(1/4pi)."""
  return 0.5 * (1.0 + erf((x - mu) / (sigma * math.sqrt(2.0))))


def attention_weights(scores, valid, bias, z_dim: int, activation: str):
  """Weights over the last (key) axis from scores Q K^T, the keys' validity and the relative
  bias: softmax(scores / sqrt(z) + bias), or laplace / relu^2 of scores / (keys seen) + bias
  (element_attention); zero at invalid keys."""
  if activation == "softmax":
    scores = scores * z_dim ** -0.5 + bias
    scores = jnp.where(valid, scores, -jnp.inf)
    any_valid = valid.any(-1, keepdims=True)
    weights = jax.nn.softmax(jnp.where(any_valid, scores, 0.0), axis=-1)
    return jnp.where(valid, weights, 0.0)
  seen = jnp.maximum(valid.sum(-1, keepdims=True), 1).astype(scores.dtype)
  scores = scores / seen + bias
  weights = laplace(scores) if activation == "laplace" else jnp.square(jax.nn.relu(scores))
  return jnp.where(valid, weights, 0.0)


def chunked_attention(q, k, v, key_mask, bias_table, *, chunk_size, activation, causal,
                      dropout=None):
  """Single-head attention within non-overlapping chunks (Mega-chunk, sec. 3.5).

  q, k `[b, l, z]`, v `[b, l, h]`, key_mask bool `[b, l]`. chunk_size <= 0 or >= l: one chunk,
  i.e. full attention. The last chunk is padded with masked keys. `dropout(weights)` if given.
  Memory: `[b, l / c, c, c]` scores, linear in l for a fixed chunk."""
  batch, length, _ = q.shape
  chunk = length if chunk_size <= 0 or chunk_size >= length else chunk_size
  num_chunks = -(-length // chunk)
  pad = num_chunks * chunk - length
  pad_seq = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
  split = lambda a: pad_seq(a).reshape(batch, num_chunks, chunk, *a.shape[2:])
  q_c, k_c, v_c, mask_c = split(q), split(k), split(v), split(key_mask)
  scores = jnp.einsum("bnqz,bnkz->bnqk", q_c, k_c)
  valid = jnp.broadcast_to(mask_c[:, :, None, :], scores.shape)
  if causal:
    valid = valid & jnp.tril(jnp.ones((chunk, chunk), bool))
  weights = attention_weights(scores, valid, relative_bias(bias_table, chunk), q.shape[-1],
                              activation)
  if dropout is not None:
    weights = dropout(weights)
  out = jnp.einsum("bnqk,bnkh->bnqh", weights, v_c)
  return out.reshape(batch, num_chunks * chunk, -1)[:, :length]


@register("mega", causal=True, cross=False, kind="sequence", decode="window")
class Mega(nn.Module):
  """The MEGA layer as a sequence mixer; returns phi * (H - X) (see the module docstring)."""
  z_dim: int = 64            # shared representation Z (mega_lra_* archs: 64; 96 cifar; 32 pf128)
  hidden_dim: int = 160      # V and H width (encoder_hidden_dim)
  ndim: int = 16             # EMA expansion dimension h (--n-dim 16 in every LRA script)
  chunk_size: int = 128      # Mega-chunk; 0 = full attention; >= length = one chunk
  attention_activation: str = "softmax"
  bidirectional: bool = False  # the LRA encoder layers build the EMA bidirectional
  truncation: int = 0        # EMA kernel length limit (truncation_length); 0 = none
  hidden_dropout_rate: float = 0.0
  causal: bool = False
  dropout_rate: float = 0.0  # attention-weight dropout
  max_len: int | None = None  # sizes the position bias table when chunk_size == 0

  def _check(self):
    if self.attention_activation not in ATTENTION_ACTIVATIONS:
      raise ValueError(f"mega attention_activation={self.attention_activation!r}; expected one "
                       f"of {ATTENTION_ACTIVATIONS}")
    if self.causal and self.bidirectional:
      raise ValueError("mega: causal=True with bidirectional=True; a bidirectional EMA sees the "
                       "future (set bidirectional=False for a causal model)")
    if self.chunk_size < 0:
      raise ValueError(f"mega chunk_size={self.chunk_size}; expected 0 (full) or >= 1")
    if self.truncation < 0:
      raise ValueError(f"mega truncation={self.truncation}; expected 0 (none) or >= 1")
    for field in ("z_dim", "hidden_dim", "ndim"):
      if getattr(self, field) < 1:
        raise ValueError(f"mega {field}={getattr(self, field)}; expected >= 1")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    self._check()
    if decode and not self.causal:
      raise ValueError("mega: decode=True needs the causal form; build it with causal=True")
    batch, length, d = x.shape
    if mask is None:
      mask = jnp.ones((batch, length), bool)
    x32 = jnp.where(mask[..., None], x.astype(jnp.float32), 0.0)
    channels = 2 * d if self.bidirectional else d
    n = self.ndim
    normal = lambda std: nn.initializers.normal(stddev=std)

    def beta_init(rng, shape):  # 1, -1, 1, -1, ... plus N(0, 0.02) ("seems more stable")
      signs = jnp.where(jnp.arange(shape[-1]) % 2 == 0, 1.0, -1.0)
      return signs + 0.02 * jax.random.normal(rng, shape)

    delta = self.param("ema_delta", normal(0.2), (channels, n))
    alpha = self.param("ema_alpha", normal(0.2), (channels, n))
    beta = self.param("ema_beta", beta_init, (channels, n))
    gamma = self.param("ema_gamma", normal(1.0), (channels, n))
    omega = self.param("ema_omega", normal(1.0), (d,))

    dense = lambda features, name: nn.Dense(features, kernel_init=PROJECTION_INIT,
                                            bias_init=nn.initializers.zeros, name=name)
    qk_gamma = self.param("qk_gamma", normal(0.02), (2, self.z_dim))
    qk_beta = self.param("qk_beta", nn.initializers.zeros, (2, self.z_dim))
    if decode:
      # A fixed window of chunk_size slots (one chunk when chunk_size >= L: slots 0..L-1 used).
      chunk = self.chunk_size if self.chunk_size > 0 else length
      cache = lambda name, shape, dtype=jnp.float32: self.variable("cache", name, jnp.zeros,
                                                                   shape, dtype)
      caches = {"ema_state": cache("ema_state", (batch, d, n)),
                "keys": cache("chunk_keys", (batch, chunk, self.z_dim)),
                "values": cache("chunk_values", (batch, chunk, self.hidden_dim)),
                "key_mask": cache("chunk_mask", (batch, chunk), bool)}
      if self.truncation:
        caches["ema_inputs"] = cache("ema_inputs", (batch, self.truncation, d))
      stepping, index = decoding.decode_index(self)
      if stepping:
        decoding.check_one_token(x, "mega")
        # The position table is the full forward's (chunk_size=0: sized by the cache's L).
        positions = self.chunk_size or self.max_len or caches["keys"].value.shape[1]
        table = self.param("rel_pos_bias", normal(0.02), (2 * positions - 1,))
        return self._decode(x32, mask, caches, index, (delta, alpha, beta, gamma, omega),
                            (qk_gamma, qk_beta), table, dense).astype(x.dtype)
    v = jax.nn.silu(dense(self.hidden_dim, "v_proj")(x32))                       # eq. 10
    # Causal: the recurrence, exactly causal; otherwise the FFT at 2L (the code's form).
    mx = jax.nn.silu(ema(x32, delta, alpha, beta, gamma, bidirectional=self.bidirectional,
                         truncation=self.truncation or None, scan=self.causal) + omega * x32)
    mx = nn.Dropout(self.hidden_dropout_rate)(mx, deterministic=deterministic)
    base = dense(d + self.z_dim + self.hidden_dim + d, "mx_proj")(mx)
    u, zr, hx = jnp.split(base, [d, d + self.z_dim + self.hidden_dim], axis=-1)
    u = jax.nn.sigmoid(u)                                                         # eq. 15
    z, r = jnp.split(jax.nn.silu(zr), [self.z_dim], axis=-1)                      # eqs. 7, 14
    q = z * qk_gamma[0] + qk_beta[0]                                              # eqs. 8, 9
    k = z * qk_gamma[1] + qk_beta[1]

    if self.chunk_size > 0:
      positions = self.chunk_size
    else:
      positions = self.max_len if self.max_len is not None else length
    table = self.param("rel_pos_bias", normal(0.02), (2 * positions - 1,))
    drop = None
    if self.dropout_rate > 0 and not deterministic:
      drop = lambda w: nn.Dropout(self.dropout_rate)(w, deterministic=False)
    attended = chunked_attention(q, k, v, mask, table, chunk_size=self.chunk_size,
                                 activation=self.attention_activation, causal=self.causal,
                                 dropout=drop)
    h = jax.nn.silu(hx + dense(d, "h_proj")(attended * r))                        # eq. 17
    return (u * (h - x32)).astype(x.dtype)                                        # eq. 18 - X

  def _decode(self, x32, mask, caches, index, ema_params, qk, table, dense):
    """One token x32 `[b, 1, d]` (float32, padding zeroed) at position `index`: __call__'s steps
    with the EMA as its recurrence and attention over the current chunk's cached keys."""
    delta, alpha, beta, gamma, omega = ema_params
    d = x32.shape[-1]
    x_t = x32[:, 0]
    v = jax.nn.silu(dense(self.hidden_dim, "v_proj")(x_t))                      # eq. 10
    p, q = ema_coefficients(delta, alpha)                                       # [d, n]
    drive = x_t[..., None]
    if self.truncation:  # h_t = q h_{t-1} + p beta (u_t - q^T u_{t-T}) (truncated kernel)
      window = caches["ema_inputs"]
      drive = drive - q ** self.truncation * window.value[:, 0, :, None]
      window.value = _history.push_window(window.value, x_t)
    state = q * caches["ema_state"].value + p * beta * drive                    # eq. 3
    caches["ema_state"].value = state
    ema_t = jnp.einsum("bdn,dn->bd", state, gamma * math.sqrt(1.0 / delta.shape[-1]))
    mx = jax.nn.silu(ema_t + omega * x_t)
    base = dense(d + self.z_dim + self.hidden_dim + d, "mx_proj")(mx)
    u, zr, hx = jnp.split(base, [d, d + self.z_dim + self.hidden_dim], axis=-1)
    u = jax.nn.sigmoid(u)                                                       # eq. 15
    z, r = jnp.split(jax.nn.silu(zr), [self.z_dim], axis=-1)                    # eqs. 7, 14
    qk_gamma, qk_beta = qk
    query = z * qk_gamma[0] + qk_beta[0]                                        # eqs. 8, 9
    key = z * qk_gamma[1] + qk_beta[1]
    # Mega-chunk (sec. 3.5): token t sits at slot t mod c of its chunk and sees slots <= it.
    chunk = caches["keys"].value.shape[1]
    slot = index % chunk
    put = lambda name, value: caches[name].value.at[:, slot].set(value)
    caches["keys"].value = put("keys", key)
    caches["values"].value = put("values", v)
    real = jnp.ones(x_t.shape[:1], bool) if mask is None else mask[:, 0]
    caches["key_mask"].value = put("key_mask", real)
    slots = jnp.arange(chunk)
    valid = caches["key_mask"].value & (slots <= slot)[None]
    scores = jnp.einsum("bz,bcz->bc", query, caches["keys"].value)
    positions = (table.shape[0] + 1) // 2
    bias = table[positions - 1 + slots - slot]                  # relative_bias's row `slot`
    weights = attention_weights(scores, valid, bias, self.z_dim, self.attention_activation)
    attended = jnp.einsum("bc,bch->bh", weights, caches["values"].value)
    h = jax.nn.silu(hx + dense(d, "h_proj")(attended * r))                      # eq. 17
    return (u * (h - x_t))[:, None]                                             # eq. 18 - X
