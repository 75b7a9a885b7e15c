"""SGConv (Li, Cai, Zhang, Chen, Dey 2022, "What Makes Convolutional Models Great on Long
Sequence Modeling?"), the Structured Global Convolution (sec. 3.2), as in the authors' code
(ctlllll/SGConv gconv_standalone.py, class GConv, mode "cat_randn").

Kernel (per feature channel h): S = 1 + ceil(log2(L_max / d)) sub-kernels w_i, each `d` free
parameters (d = `kernel_dim`). Sub-kernel i is upsampled (torch F.interpolate, linear,
align_corners=False, or nearest) by 2^max(0, i-1) and weighted by m^(S-1-i); concatenated they
cover lags [0, d), [d, 2d), [2d, 4d), ..., d 2^(S-1) >= L_max in all. m is the code's
`multiplier` = linspace(decay_min, decay_max, H) (2 by default: relative to its predecessor each
scale is weighted by alpha = 1/m = 1/2, the paper's decay). The concatenated kernel is divided by
its own L2 norm at initialisation (`kernel_norm`, a buffer fixed on the first forward in the
code; here a parameter the module never differentiates: stop_gradient, so only weight decay
could move it and the recipes give it none), then cut or zero-padded to the input length.

  y = K * u + D u      (FFT convolution at 2L; K * u causal)
Bidirectional: a second kernel set runs right to left, starting at lag 1 (the code's
pad(k1.flip) placement): y_t = sum_j K0_j u_{t-j} + sum_j K1_j u_{t+1+j} + D u_t.
The code's GELU, dropout and output linear (postact GLU in the S4-repo LRA setups this code plugs
into) are the shared block's `config.model.ffn="glu"` stage, so they are not in this mixer. The
code's `channels` (>1 maps each feature to several outputs before the output linear) is 1 here.

Incremental decoding (decode="history", the causal form only): SGConv's kernel has no
recurrent form in the paper, so the cache keeps the past inputs `[b, L, H]` (L = the length of
the cache-creating call; it grows with L) and a token's output is the same kernel (rebuilt from
the parameters for length L, so with max_len=None the same scales as the full forward over L)
dotted with the reversed history, plus D u: O(L H) per token.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import _history, decoding
from models.attention.registry import register
from models.attention.s4d import fft_conv  # the same zero-padded FFT at 2L, both directions

INTERPOLATIONS = ("linear", "nearest")


def num_scales(max_len: int, kernel_dim: int) -> int:
  """1 + ceil(log2(max_len / kernel_dim)) (GConv's n_scales default), at least 1."""
  return max(1, 1 + math.ceil(math.log2(max_len / kernel_dim)))


def upsample(k, factor: int, mode: str = "linear"):
  """torch.nn.functional.interpolate(k, scale_factor=factor, mode, align_corners=False) on the
  last axis: output j reads input (j + 0.5) / factor - 0.5 (clamped at 0), linearly
  interpolated; "nearest" reads floor(j / factor)."""
  if factor == 1:
    return k
  size = k.shape[-1]
  out = jnp.arange(size * factor)
  if mode == "nearest":
    return k[..., out // factor]
  source = jnp.maximum((out + 0.5) / factor - 0.5, 0.0)
  low = jnp.floor(source).astype(jnp.int32)
  high = jnp.minimum(low + 1, size - 1)
  frac = source - low
  return k[..., low] * (1.0 - frac) + k[..., high] * frac


def sgconv_kernel(sub_kernels, multiplier, mode: str = "linear"):
  """Concatenation of the upsampled, decayed sub-kernels (mode "cat"): sub_kernels is a list
  of `[c, h, d]`, multiplier `[h]`; returns `[c, h, d 2^(S-1)]` (not yet normalised)."""
  count = len(sub_kernels)
  pieces = [upsample(k, 2 ** max(0, i - 1), mode) * (multiplier[:, None] ** (count - i - 1))
            for i, k in enumerate(sub_kernels)]
  return jnp.concatenate(pieces, axis=-1)


def fit_length(kernel, length: int):
  """Cut or zero-pad the kernel's last axis to `length`."""
  size = kernel.shape[-1]
  if size >= length:
    return kernel[..., :length]
  return jnp.pad(kernel, [(0, 0)] * (kernel.ndim - 1) + [(0, length - size)])


@register("sgconv", causal=True, cross=False, kind="sequence", decode="history")
class SGConv(nn.Module):
  """Structured global convolution with a D skip; sub-kernels `kernel_<i>`, `D`, `kernel_norm`."""
  kernel_dim: int = 32        # d, the first sub-kernel's length (README example: 32)
  decay_min: float = 2.0      # multiplier m per channel = linspace(decay_min, decay_max, H)
  decay_max: float = 2.0
  interpolation: str = "linear"
  bidirectional: bool = False
  causal: bool = False
  max_len: int | None = None  # the kernel covers it (l_max); None: the input length at init

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    if self.interpolation not in INTERPOLATIONS:
      raise ValueError(f"sgconv interpolation={self.interpolation!r}; expected one of "
                       f"{INTERPOLATIONS}")
    if self.causal and self.bidirectional:
      raise ValueError("sgconv: causal=True with bidirectional=True; a bidirectional kernel "
                       "sees the future (set bidirectional=False for a causal model)")
    if self.kernel_dim < 1:
      raise ValueError(f"sgconv kernel_dim={self.kernel_dim}; expected >= 1")
    if not 0 < self.decay_min <= self.decay_max:
      raise ValueError(f"sgconv decay_min={self.decay_min}, decay_max={self.decay_max}; "
                       "expected 0 < decay_min <= decay_max")
    if decode and not self.causal:
      raise ValueError("sgconv: decode=True needs the causal form; build it with causal=True")
    batch, length, h = x.shape
    if decode:  # the kernel is the one for the cache's length L (the cache-creating call's)
      history = self.variable("cache", "history", jnp.zeros, x.shape, x.dtype)
      stepping, index = decoding.decode_index(self)
      length = history.value.shape[1]
    u = x.astype(jnp.float32)
    if mask is not None:
      u = jnp.where(mask[..., None], u, 0.0)
    channels = 2 if self.bidirectional else 1
    scales = num_scales(self.max_len or length, self.kernel_dim)
    normal = nn.initializers.normal(stddev=1.0)   # torch.randn
    sub_kernels = [self.param(f"kernel_{i}", normal, (channels, h, self.kernel_dim))
                   for i in range(scales)]
    d_skip = self.param("D", normal, (h,))
    multiplier = jnp.linspace(self.decay_min, self.decay_max, h)
    kernel = sgconv_kernel(sub_kernels, multiplier, self.interpolation)
    # The norm of the initial kernel, fixed afterwards (the code's kernel_norm buffer).
    norm = self.param("kernel_norm",
                      lambda rng: jnp.linalg.norm(jax.lax.stop_gradient(kernel), axis=-1,
                                                  keepdims=True))
    kernel = fit_length(kernel, length) / jax.lax.stop_gradient(norm)
    if decode and stepping:
      return self._decode(u, history, index, kernel[0], d_skip).astype(x.dtype)
    y = fft_conv(u, kernel[0], kernel[1] if self.bidirectional else None) + d_skip * u
    return y.astype(x.dtype)

  def _decode(self, u, history, index, kernel, d_skip):
    """One token u `[b, 1, H]` at position `index`: y = sum_{j <= index} K[index - j] u_j + D u
    over the cached inputs (kernel `[H, L]`)."""
    decoding.check_one_token(u, "sgconv")
    history.value = _history.write(history.value, u[:, 0], index)
    return (_history.causal_dot(history.value, kernel.T, index) + d_skip * u[:, 0])[:, None]
