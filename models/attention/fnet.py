"""FNet's Fourier token mixing (Lee-Thorp et al. 2022, "FNet: Mixing Tokens with Fourier
Transforms", NAACL; sec. 3.2, eq. 3).

The attention sublayer is replaced by a parameter-free 2-D discrete Fourier transform, one 1-D
DFT along the hidden dimension and one along the sequence, of which only the real part is kept:

  y = Re(F_seq(F_h(x))).

The block's residual connection, layer norm and feed-forward sublayer (the shared encoder block)
do the rest. There are no parameters, no attention weights (so no attention dropout) and no
causal form: every output is a sum over all positions.

Padding (not in the paper, whose inputs are fixed-length): the sequence DFT of an example is
taken over its real length n = mask.sum(), X_k = sum_{t<n} x_t exp(-2 pi i k t / n), so real
outputs neither see padded positions nor depend on how much padding follows; outputs at padded
positions are zero. The lengths differ per example, so this DFT uses Bluestein's chirp-z
algorithm: with w_m = exp(-i pi m^2 / n), k t = (k^2 + t^2 - (k - t)^2) / 2 gives

  X_k = w_k sum_t (x_t w_t) conj(w_{k-t}),

a linear convolution computed with FFTs of one power-of-two size >= 2L for the whole batch, so
it stays O(L log L) (n enters only elementwise through the chirp). The chirp's phase uses
m^2 mod 2n in integers, exact at any length (float32 m^2 / n would not be at 16K positions).
Without a mask the plain FFT over the L positions is used (the same DFT with n = L).

Computed in float32 (complex64) whatever the input dtype, cast back to it: the paper's
implementation is float32 FFTs (its TPU variant uses DFT matrix multiplications for short
lengths, the same transform).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from models.attention.registry import register

# (m mod 2n)^2 must fit in int32 (m < L, n <= L): L < sqrt(2^31) / 2.
MAX_LENGTH = 23_170


def _chirp(length: int, n):
  """w_m = exp(-i pi m^2 / n) for m < length, per example: `[b, length]` complex64."""
  m = jnp.arange(length, dtype=jnp.int32)[None, :]
  two_n = 2 * n[:, None]
  r = m % two_n
  phase = (r * r) % two_n   # m^2 mod 2n: w has period 2n in m^2
  angle = -jnp.pi * phase.astype(jnp.float32) / n[:, None].astype(jnp.float32)
  return jnp.exp(1j * angle.astype(jnp.complex64))


def bluestein_dft(x, n):
  """Per-example DFT of length n[b] along axis 1 of complex `x` `[b, L, D]` (x_t = 0 for
  t >= n expected): X_k = sum_{t<n} x_t exp(-2 pi i k t / n), returned for k < L (meaningful
  for k < n)."""
  length = x.shape[1]
  if length > MAX_LENGTH:
    raise ValueError(f"fnet: sequence length {length} > {MAX_LENGTH} (int32 chirp phase)")
  size = 1 << max(2 * length - 1, 1).bit_length()   # power of two >= 2L - 1: no wrap-around
  n = jnp.maximum(n.astype(jnp.int32), 1)
  w = _chirp(length, n)                                            # [b, L]
  # b_m = conj(w_m) at m = -(L-1) .. L-1 (w_{-m} = w_m), laid out cyclically in `size`.
  kernel = jnp.zeros((x.shape[0], size), jnp.complex64)
  kernel = kernel.at[:, :length].set(jnp.conj(w))
  if length > 1:
    kernel = kernel.at[:, size - length + 1:].set(jnp.conj(w[:, 1:])[:, ::-1])
  spectrum = jnp.fft.fft(x * w[..., None], n=size, axis=1) * jnp.fft.fft(kernel, axis=1)[..., None]
  conv = jnp.fft.ifft(spectrum, axis=1)[:, :length]
  return w[..., None] * conv


def fourier_mix(x, mask=None):
  """Pure function: y = Re(F_seq(F_h(x))) (eq. 3) of `x` `[b, l, features]`, the sequence DFT
  over each example's real length where `mask` (bool `[b, l]`) is given."""
  compute = x.astype(jnp.float32)
  if mask is None:
    return jnp.real(jnp.fft.fft2(compute, axes=(1, 2))).astype(x.dtype)
  mask = mask.astype(bool)
  compute = jnp.where(mask[..., None], compute, 0.0)
  hidden = jnp.fft.fft(compute, axis=-1)                            # F_h
  mixed = jnp.real(bluestein_dft(hidden, mask.sum(axis=1)))         # Re(F_seq(.))
  return jnp.where(mask[..., None], mixed, 0.0).astype(x.dtype)


@register("fnet", causal=False, cross=False, kind="sequence")
class FNetMixer(nn.Module):
  """FNet's parameter-free Fourier sublayer (no settings)."""

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True):
    del deterministic   # nothing random: no parameters, no dropout
    return fourier_mix(x, mask)
