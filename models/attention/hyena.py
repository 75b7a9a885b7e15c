"""Hyena (Poli, Massaroli, Nguyen, Fu, Dao, Baccus, Bengio, Ermon, Re 2023, sec. 3, Algorithm 3).

    x_1..x_N, v = short_conv(W_in u)        (N+1 projections; depthwise causal conv, 3 taps)
    h_1..h_N    = window(t) * FFN(PosEmb(t)) (implicit long filters, sec. 3.3, Algorithm 2)
    v <- x_n * (h_n * v + b_n v)             for n = 1..N  (FFT conv at 2L, bias/"D" term b_n)
    out = W_out v

`form` picks the recurrence:
- "paper": Algorithm 3 / Def. 3.1 as above, N long filters.
- "safari": the authors' released operator (HazyResearch/safari src/models/sequence/hyena.py,
  HyenaOperator.forward): with the projections split as x_0..x_{N-1}, v, it runs
  v <- h_n * (x_n v) + b_n (x_n v) for n = N-1..1 (gate, then convolve) and y = x_0 v: N-1 long
  filters (its filter has head_dim * (order - 1) channels).

Implicit filter, as in safari's HyenaFilter:
- PositionalEmbedding: t = linspace(0, 1, max_len); bands = (emb_dim - 1) // 2 frequencies
  f = linspace(1e-4, bands - 1, bands); z = [t, Re exp(-i f w), Im exp(-i f w)] with
  w = 2 pi (0..max_len-1) / max_len. Built at `max_len` and sliced to L, so a filter never
  depends on the input length. z is a parameter in their code (learning rate lr_pos_emb=1e-5,
  no weight decay): here `pos_emb_z`, put in its own group by the configs.
- FFN: Linear(emb_dim, filter_order), Sin, then num_inner_mlps x [Linear(filter_order,
  filter_order), Sin], then Linear(filter_order, channels, no bias). One Sin module is reused, so
  all its layers share one trainable frequency vector (init `sine_freq`, their `w`): sin(freq x).
- ExponentialModulation: h <- h * (exp(-t |delta_c|) + shift), delta_c = linspace(
  log(target) / slow_decay_pct, log(target) / fast_decay_pct, channels) (fixed: modulation_lr
  = 0, a buffer in their code). `normalized` divides by the L1 norm over the channel axis at
  each position (their `torch.norm(h, dim=-1, p=1)` on `[1, L, channels]`), default off.
- bias b ~ N(0, 1) per filter channel (`filter_bias=False` zeroes it, their `bias=False`).
Filter channel layout is safari's '(v o)': channel c * n_filters + o is filter o of feature c.

Dropout (`dropout_rate`, their operator's `dropout`) is applied to each gated value x_n v that
enters a long convolution (safari: `v = self.dropout(v * x_i)` before `filter_fn`); for "paper"
the gated values that feed a further convolution. Their filter dropout is "not implemented"
there, so there is none here. Hyena is causal; safari's operator has no bidirectional form, so
neither has this (`causal` is accepted and changes nothing). One head (num_heads=1),
inner_factor=1, num_blocks=1, no outer_mixing / post_order_ffn (safari's layer defaults).

Incremental decoding (decode="history"): the paper gives the long convolutions no recurrent
form (distilling them into one is separate work), so each of the n_filters long convolutions
keeps its own past inputs (cache `history` `[n_filters, b, L, features]`, L = the length of the
cache-creating call: it grows with L) and a token's output is the filter (regenerated from the
parameters for length L, as the full forward's) dotted with the reversed history, O(L) per
token; the short conv keeps its last `short_filter_order` inputs (`short_window`, constant).

Padding: x is zeroed at padded positions before the projection, and every value entering a long
convolution is zeroed there, so padded positions never reach real outputs.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import _history, decoding
from models.attention.h3 import torch_bias_init, torch_linear_init  # torch's default inits
from models.attention.registry import register
from models.attention.s4d import fft_conv

FORMS = ("paper", "safari")


def positional_embedding(max_len: int, emb_dim: int) -> tuple[np.ndarray, np.ndarray]:
  """(z `[max_len, emb_dim]`, t `[max_len, 1]`): safari's PositionalEmbedding."""
  if emb_dim < 3 or emb_dim % 2 == 0:
    raise ValueError(f"hyena emb_dim={emb_dim}; expected an odd number >= 3 (time, cos, sin)")
  bands = (emb_dim - 1) // 2
  t = np.linspace(0.0, 1.0, max_len)[:, None]
  w = 2 * np.pi * np.arange(max_len, dtype=np.float64)[:, None] / max_len
  f = np.linspace(1e-4, bands - 1, bands)[None, :]
  z = np.exp(-1j * f * w)
  return (np.concatenate([t, z.real, z.imag], axis=-1).astype(np.float32),
          t.astype(np.float32))


def decay_rates(channels: int, fast_decay_pct: float, slow_decay_pct: float,
                target: float) -> np.ndarray:
  """ExponentialModulation's delta: linspace(log(target)/slow, log(target)/fast, channels)."""
  return np.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct,
                     channels).astype(np.float32)


def modulation_window(t, deltas, shift: float):
  """exp(-t |delta|) + shift: `[L, 1]` x `[channels]` -> `[L, channels]`."""
  return jnp.exp(-t * jnp.abs(deltas)) + shift


def short_causal_conv(u, weight, bias):
  """Depthwise causal conv: y[t] = bias + sum_j weight[j] u[t - (K - 1) + j] (torch Conv1d with
  padding K - 1, first L outputs). u `[b, L, C]`, weight `[K, C]`."""
  taps, length = weight.shape[0], u.shape[1]
  padded = jnp.pad(u, ((0, 0), (taps - 1, 0), (0, 0)))
  return bias + sum(weight[j] * padded[:, j:j + length] for j in range(taps))


def long_conv(u, kernel, bias):
  """y = kernel * u (causal, FFT at 2L, no wrap-around) + bias u. u `[b, L, C]`, kernel
  `[L, C]`, bias `[C]`; float32."""
  return fft_conv(u, kernel.T) + bias * u.astype(jnp.float32)


def hyena_recurrence(gates, v, filters, biases, form: str, keep=None, drop=None, conv=None):
  """The Hyena recurrence (pure). gates: list of `[b, L, D]` (paper: x_1..x_N; safari:
  x_0..x_{N-1}); v `[b, L, D]`; filters `[L, D, n_filters]`, biases `[D, n_filters]`;
  keep `[b, L, 1]` (1 = real) zeroes what enters each convolution; drop: dropout function.
  conv(n, a): long convolution n of a (default: `long_conv` with filter n; decoding passes
  its one-token step over the cached history)."""
  zero = (lambda a: a) if keep is None else (lambda a: a * keep)
  drop = drop or (lambda a: a)
  conv = conv or (lambda n, a: long_conv(a, filters[:, :, n], biases[:, n]))
  if form == "paper":
    for n, x_n in enumerate(gates):
      if n:
        v = drop(v)
      v = x_n * conv(n, zero(v))
    return v
  if form == "safari":
    for o, x_i in enumerate(reversed(gates[1:])):
      v = conv(o, zero(drop(v * x_i)))
    return v * gates[0]
  raise ValueError(f"hyena form={form!r}; expected one of {FORMS}")


class HyenaFilter(nn.Module):
  """Implicit long filters `[length, channels]`: h(t) = window(t) * FFN(z(t)) (safari
  HyenaFilter.filter; Hyena sec. 3.3, Algorithm 2)."""
  max_len: int
  channels: int
  emb_dim: int = 3
  filter_order: int = 64
  num_inner_mlps: int = 2
  sine_freq: float = 1.0
  modulate: bool = True
  fast_decay_pct: float = 0.3
  slow_decay_pct: float = 1.5
  target: float = 1e-2
  shift: float = 0.0
  normalized: bool = False

  @nn.compact
  def __call__(self, length: int):
    z0, t = positional_embedding(self.max_len, self.emb_dim)
    z = self.param("pos_emb_z", lambda key, s: jnp.asarray(z0), z0.shape)[:length]
    freq = self.param("sin_freq", nn.initializers.constant(self.sine_freq), (self.filter_order,))
    h = z
    for i in range(self.num_inner_mlps + 1):
      fan_in = h.shape[-1]
      h = nn.Dense(self.filter_order, kernel_init=torch_linear_init(),
                   bias_init=torch_bias_init(fan_in), name=f"filter_dense_{i}")(h)
      h = jnp.sin(freq * h)
    h = nn.Dense(self.channels, use_bias=False, kernel_init=torch_linear_init(),
                 name="filter_out")(h)
    if self.modulate:
      deltas = decay_rates(self.channels, self.fast_decay_pct, self.slow_decay_pct, self.target)
      h = h * modulation_window(jnp.asarray(t[:length]), jnp.asarray(deltas), self.shift)
    if self.normalized:
      h = h / jnp.sum(jnp.abs(h), axis=-1, keepdims=True)
    return h


@register("hyena", causal=True, cross=False, needs_max_len=True, kind="sequence",
          decode="history")
class Hyena(nn.Module):
  """Hyena operator; defaults are safari's configs/model/layer/hyena.yaml and hyena-filter.yaml
  (order 2, filter_order 64, short_filter_order 3, emb_dim 3, w 1, num_inner_mlps 2, bias on,
  normalized off) and ExponentialModulation's (0.3, 1.5, 1e-2, shift 0, modulate on)."""
  causal: bool = False       # Hyena is causal by construction; no bidirectional form in its code
  max_len: int | None = None  # positional table size (safari: l_max / seq_len)
  dropout_rate: float = 0.0  # operator dropout on the gated values (safari: `dropout`)
  order: int = 2
  form: str = "safari"       # the authors' released operator (their runs'); "paper": Alg. 3
  filter_order: int = 64     # width of the filter FFN (safari HyenaOperator default)
  emb_dim: int = 3
  num_inner_mlps: int = 2
  sine_freq: float = 1.0     # safari hyena-filter.yaml w
  short_filter_order: int = 3
  filter_bias: bool = True
  normalized: bool = False
  modulate: bool = True
  fast_decay_pct: float = 0.3
  slow_decay_pct: float = 1.5
  target: float = 1e-2
  shift: float = 0.0

  def _check(self, length):
    if self.max_len is None:
      raise ValueError("hyena needs max_len (the positional table of its filters is built at "
                       "max_len and sliced to the input length)")
    if length > self.max_len:
      raise ValueError(f"hyena input length {length} exceeds max_len={self.max_len}")
    if self.form not in FORMS:
      raise ValueError(f"hyena form={self.form!r}; expected one of {FORMS}")
    if self.emb_dim < 3 or self.emb_dim % 2 == 0:
      raise ValueError(f"hyena emb_dim={self.emb_dim}; expected an odd number >= 3 "
                       "(time, cos, sin)")
    if self.order < 2:
      raise ValueError(f"hyena order={self.order}; expected >= 2 (safari asserts order >= 2)")
    for field in ("filter_order", "short_filter_order"):
      if getattr(self, field) < 1:
        raise ValueError(f"hyena {field}={getattr(self, field)}; expected >= 1")
    if self.num_inner_mlps < 0:
      raise ValueError(f"hyena num_inner_mlps={self.num_inner_mlps}; expected >= 0")
    if not 0 < self.target < 1 or self.fast_decay_pct <= 0 or self.slow_decay_pct <= 0:
      raise ValueError(f"hyena target={self.target}, fast_decay_pct={self.fast_decay_pct}, "
                       f"slow_decay_pct={self.slow_decay_pct}; expected 0 < target < 1 and "
                       "positive decay percentages")
    if not 0 <= self.dropout_rate < 1:
      raise ValueError(f"hyena dropout_rate={self.dropout_rate}; expected in [0, 1)")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    batch, length, features = x.shape
    self._check(length)
    n_filters = self.order if self.form == "paper" else self.order - 1
    width = (self.order + 1) * features
    taps = self.short_filter_order
    stepping = False
    if decode:
      window = self.variable("cache", "short_window", jnp.zeros, (batch, taps, width),
                             jnp.float32)
      history = self.variable("cache", "history", jnp.zeros,
                              (n_filters, batch, length, features), jnp.float32)
      stepping, index = decoding.decode_index(self)
      if stepping:
        decoding.check_one_token(x, "hyena")
        length = history.value.shape[2]  # the filters are the full forward's over L
    xf = x.astype(jnp.float32)
    keep = None
    if mask is not None:
      keep = mask[:, :, None].astype(jnp.float32)
      xf = xf * keep
    u = nn.Dense(width, kernel_init=torch_linear_init(), bias_init=torch_bias_init(features),
                 name="in_proj")(xf)
    conv_w = self.param("short_filter_kernel", torch_bias_init(taps), (taps, width))
    conv_b = self.param("short_filter_bias", torch_bias_init(taps), (width,))
    if stepping:  # the short conv over its last `taps` inputs (oldest first)
      window.value = _history.push_window(window.value, u[:, 0])
      u = (conv_b + jnp.einsum("bkc,kc->bc", window.value, conv_w))[:, None]
    else:
      u = short_causal_conv(u, conv_w, conv_b)
    *gates, v = jnp.split(u, self.order + 1, axis=-1)

    filters = HyenaFilter(
        self.max_len, features * n_filters, self.emb_dim, self.filter_order,
        self.num_inner_mlps, self.sine_freq, self.modulate, self.fast_decay_pct,
        self.slow_decay_pct, self.target, self.shift, self.normalized, name="filter")(length)
    filters = filters.reshape(length, features, n_filters)           # safari '(v o)'
    bias = self.param("filter_bias_D", nn.initializers.normal(1.0), (features * n_filters,))
    bias = bias.reshape(features, n_filters) * (1.0 if self.filter_bias else 0.0)

    drop = None
    if self.dropout_rate > 0 and not deterministic:
      drop = lambda a: nn.Dropout(self.dropout_rate, deterministic=False)(a)
    if stepping:
      y = self._decode(gates, v, filters, bias, keep, history, index)
    else:
      y = hyena_recurrence(gates, v, filters, bias, self.form, keep, drop)
    out = nn.Dense(features, kernel_init=torch_linear_init(),
                   bias_init=torch_bias_init(features), name="out_proj")(y)
    return out.astype(x.dtype)

  def _decode(self, gates, v, filters, bias, keep, history, index):
    """One token (gates, v `[b, 1, D]`) through hyena_recurrence, each long convolution n a step
    over its own cached inputs: y = sum_{j <= index} h_n[index - j] a_j + b_n a (no dropout)."""
    histories = list(history.value)

    def conv(n, a):  # a [b, 1, D]
      histories[n] = _history.write(histories[n], a[:, 0], index)
      return (_history.causal_dot(histories[n], filters[:, :, n], index)
              + bias[:, n] * a[:, 0])[:, None]

    y = hyena_recurrence(gates, v, filters, bias, self.form, keep, conv=conv)
    history.value = jnp.stack(histories)
    return y
