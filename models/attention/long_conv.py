"""Long convolutions (Fu, Epstein, Nguyen, Thomas, Zhang, Dao, Rudra, Re 2023, "Simple
Hardware-Efficient Long Convolutions for Sequence Modeling").

Per feature h a learned kernel K[h, :max_len] as long as the longest input, applied by an FFT
convolution at length 2L (zero-padded, no wrap-around), plus a D skip term (sec. 3.1):
  y = K' * u + D u,   K' = Dropout(Squash(Smooth(K))),
- Squash (sec. 3.1): soft-threshold sign(k) max(|k| - lam, 0), elementwise.
- Smooth (sec. 3.1): average pooling over `smooth_window` neighbouring taps (the authors'
  code: AvgPool1d(window, stride 1, padding window // 2), zeros beyond the ends counted in the
  mean); 0 = off, the default of their code (`use_ma_smoothing=False`) and of their LRA configs.
- Kernel dropout: their LongConvKernel's `kernel_dropout`, elementwise dropout on K' at
  training; here the context field `dropout_rate` (config.model.attention_dropout_rate).
- Init (their LongConvKernel): "random" K ~ N(0, 0.002^2); "double_exp" K ~ N(0, 0.02^2) times
  exp(-(l / max_len) (H // 2)^(h / H)).
- D ~ N(0, 1) (their torch.randn(channels, H)).
- `bidirectional` (their LongConv, as S4's FFTConv): two kernels; the second is read backwards,
  y_t += sum_{s>=1} K'_1[s-1] u_{t+s}.
Order as in their code: smooth, squash, dropout over the whole max_len kernel, then the first L
taps are used (their code convolves at length max_len + L; with L < max_len the taps past L
would wrap around circularly, so they are cut here).

The activation, dropout and GLU output linear of their layer are the shared block's output
stage (`config.model.ffn = "glu"`). Their LRA configs use `channels: 2` (two kernels per feature,
a 2H-wide output into that linear); one channel here (the block's stage reads H features).
Parameter names: `kernel` (their own learning rate, weight decay 0), `D`.

Incremental decoding (decode="history", the causal form only): the paper has no recurrent form
of a free kernel, so the cache keeps the past inputs `[b, L, H]` (L = the most tokens decoded,
the length of the cache-creating call; it grows with L) and a token's output is the kernel's
first L taps (the same K' as the full forward, from the parameters) dotted with the reversed
history plus D u: O(L H) per token.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import _history, decoding
from models.attention.registry import register
from models.attention.s4d import fft_conv

KERNEL_INITS = ("random", "double_exp")


def smooth(kernel, window: int):
  """Average pooling over the last axis, stride 1, zero padding window // 2 each side, divided by
  `window` everywhere (torch AvgPool1d's count_include_pad=True). window <= 1: unchanged."""
  if window <= 1:
    return kernel
  pad = [(0, 0)] * (kernel.ndim - 1) + [(window // 2, window // 2)]
  summed = jax.lax.reduce_window(jnp.pad(kernel, pad), 0.0, jax.lax.add,
                                 (1,) * (kernel.ndim - 1) + (window,), (1,) * kernel.ndim,
                                 "VALID")
  return summed / window


def squash(kernel, lam: float):
  """Soft-threshold (sec. 3.1): sign(k) max(|k| - lam, 0)."""
  return jnp.sign(kernel) * jnp.maximum(jnp.abs(kernel) - lam, 0.0)


def init_kernel(kind: str):
  def init(rng, shape):  # shape [channels, H, max_len]
    if kind == "random":
      return 0.002 * jax.random.normal(rng, shape, jnp.float32)
    _, features, length = shape
    h = jnp.arange(features, dtype=jnp.float32)[:, None]
    l = jnp.arange(length, dtype=jnp.float32)[None, :]
    decay = jnp.exp(-(l / length) * float(features // 2) ** (h / features))
    return 0.02 * jax.random.normal(rng, shape, jnp.float32) * decay
  return init


@register("long_conv", causal=True, cross=False, needs_max_len=True, kind="sequence",
          decode="history")
class LongConv(nn.Module):
  """A max_len-long learned kernel per feature, regularised, by FFT convolution (docstring)."""
  causal: bool = False
  max_len: int | None = None
  dropout_rate: float = 0.0   # kernel dropout (their `kernel_dropout`)
  lam: float = 0.003          # Squash threshold (their layer config's default)
  smooth_window: int = 0      # Smooth's average-pooling window (odd); 0 = off
  kernel_init: str = "random"
  bidirectional: bool = False

  def check(self, length: int):
    if self.causal and self.bidirectional:
      raise ValueError("long_conv: causal=True and bidirectional=True are exclusive (a "
                       "bidirectional kernel reads the future)")
    if self.max_len is None or length > self.max_len:
      raise ValueError(f"long_conv: an input of length {length} needs max_len >= it (the kernel "
                       f"has max_len taps); max_len={self.max_len}")
    if self.kernel_init not in KERNEL_INITS:
      raise ValueError(f"long_conv kernel_init={self.kernel_init!r}; expected one of "
                       f"{KERNEL_INITS}")
    if self.smooth_window < 0 or (self.smooth_window > 1 and self.smooth_window % 2 == 0):
      raise ValueError(f"long_conv smooth_window={self.smooth_window}; expected 0 (off) or an "
                       "odd window")
    if self.lam < 0:
      raise ValueError(f"long_conv lam={self.lam}; expected >= 0")
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"long_conv dropout_rate={self.dropout_rate}; expected in [0, 1)")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    batch, length, features = x.shape
    self.check(length)
    if decode and not self.causal:
      raise ValueError("long_conv: decode=True needs the causal form; build it with causal=True")
    channels = 2 if self.bidirectional else 1
    kernel = self.param("kernel", init_kernel(self.kernel_init),
                        (channels, features, self.max_len))
    D = self.param("D", nn.initializers.normal(1.0), (features,))
    k = squash(smooth(kernel, self.smooth_window), self.lam)
    u = x.astype(jnp.float32)
    if mask is not None:  # padding carries nothing into either direction's convolution
      u = jnp.where(mask[..., None], u, 0.0)
    if decode:
      history = self.variable("cache", "history", jnp.zeros, x.shape, x.dtype)
      stepping, index = decoding.decode_index(self)
      if stepping:
        return self._decode(u, history, index, k[0], D).astype(x.dtype)
    k = nn.Dropout(self.dropout_rate)(k, deterministic=deterministic)[..., :length]
    y = fft_conv(u, k[0], k[1] if self.bidirectional else None) + D * u
    return y.astype(x.dtype)

  def _decode(self, u, history, index, kernel, D):
    """One token u `[b, 1, H]` at position `index`: y = sum_{j <= index} K'[index - j] u_j + D u
    over the cached inputs (kernel `[H, max_len]`, cut to the history's L taps; no dropout)."""
    decoding.check_one_token(u, "long_conv")
    history.value = _history.write(history.value, u[:, 0], index)
    taps = kernel[:, :history.value.shape[1]].T                     # [L, H]
    return (_history.causal_dot(history.value, taps, index) + D * u[:, 0])[:, None]
