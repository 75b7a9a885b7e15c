"""LRU: the Linear Recurrent Unit (Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De, ICML
2023, "Resurrecting Recurrent Neural Networks for Long Sequences").

A linear, diagonal, complex recurrence over a state of size N (sec. 3, eq. 7-8):
  x_k = diag(lambda) x_{k-1} + gamma * (B u_k),   y_k = Re(C x_k) + D u_k,
with the exponential parameterisation lambda_j = exp(-exp(nu_log_j) + i exp(theta_log_j))
(sec. 3.3), the "ring" initialisation (sec. 3.2, Lemma 3.2): |lambda| uniform on the ring
r_min <= |lambda| <= r_max in the area sense, i.e. nu = -1/2 log(u (r_max^2 - r_min^2) + r_min^2),
and phase theta = max_phase * u, u ~ U[0, 1); the normalisation gamma_log = log sqrt(1 - |lambda|^2)
(sec. 3.4, a trained parameter initialised so); B and C complex Glorot-like, entries
N(0, 1/(2H)) per real and imaginary part for B [N, H] and N(0, 1/N) for C [H, N]; D real N(0, 1)
(App. A). The recurrence runs as a parallel scan (App. A uses jax.lax.associative_scan).

`bidirectional` (not in the LRU paper, whose App. A layer reads left to right): as in S5's
code, a second scan runs backwards with the same lambda, gamma and B, is read by its own output
matrix C2 and the two readouts are summed. The GELU/GLU, norm and residual of the paper's block
(Fig. 1) are the shared block's (`config.model.ffn="glu"`, `norm`, `prenorm`).

Incremental decoding (decode="recurrent", the causal form only): the cache holds the state
x_{k-1} `[b, N]` complex64, whatever the length; a token takes one step of eq. 7,
x_k = lambda x_{k-1} + gamma B u_k, and reads y_k = Re(C x_k) + D u_k.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding
from models.attention._diagonal_scan import diagonal_scan, zero_padding
from models.attention.registry import register


def nu_log_init(rng, shape, r_min, r_max):
  """log(nu) with nu = -1/2 log(u (r_max^2 - r_min^2) + r_min^2): |lambda| = exp(-nu) is then
  distributed uniformly by area on the ring [r_min, r_max] (LRU Lemma 3.2)."""
  u = jax.random.uniform(rng, shape, jnp.float32)
  return jnp.log(-0.5 * jnp.log(u * (r_max ** 2 - r_min ** 2) + r_min ** 2))


def theta_log_init(rng, shape, max_phase):
  """log(theta), theta = max_phase * u, u ~ U[0, 1) (LRU sec. 3.2)."""
  return jnp.log(max_phase * jax.random.uniform(rng, shape, jnp.float32))


def lru_lambda(nu_log, theta_log):
  """lambda = exp(-exp(nu_log) + i exp(theta_log)) (LRU sec. 3.3), complex64 [N]."""
  return jnp.exp(-jnp.exp(nu_log) + 1j * jnp.exp(theta_log))


def lru_recurrence(u, lam, b, c, d, *, c_backward=None):
  """Pure function. u `[b, l, h]` float32 (zero at padding), lam [N] complex, b [N, h] complex
  (gamma already applied), c [h, N] complex, d [h]. y = Re(C x) + D u; with `c_backward` a
  backward scan's states are read by it and added (bidirectional)."""
  bu = jnp.einsum("blh,nh->bln", u.astype(jnp.complex64), b)
  read = lambda cc, states: jnp.einsum("hn,bln->blh", cc, states).real
  y = read(c, diagonal_scan(lam, bu))
  if c_backward is not None:
    y = y + read(c_backward, diagonal_scan(lam, bu, reverse=True))
  return y + d * u


@register("lru", causal=True, cross=False, kind="sequence", decode="recurrent")
class LRU(nn.Module):
  """The LRU layer's recurrence (App. A's LRU); defaults are App. A's function defaults."""
  causal: bool = False
  state_size: int = 256           # N
  r_min: float = 0.0
  r_max: float = 1.0
  max_phase: float = 2 * math.pi  # App. A: max_phase=6.28
  bidirectional: bool = False

  def _check(self):
    if self.causal and self.bidirectional:
      raise ValueError("lru: causal=True and bidirectional=True together; a causal model reads "
                       "left to right only (set bidirectional=False)")
    if self.state_size < 1:
      raise ValueError(f"lru state_size={self.state_size}; expected >= 1")
    if not 0.0 <= self.r_min < self.r_max <= 1.0:
      raise ValueError(f"lru r_min={self.r_min}, r_max={self.r_max}; expected "
                       "0 <= r_min < r_max <= 1")
    if not 0.0 < self.max_phase <= 2 * math.pi + 1e-6:
      raise ValueError(f"lru max_phase={self.max_phase}; expected in (0, 2 pi]")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    self._check()
    if decode and not self.causal:
      raise ValueError("lru: decode=True needs the causal (left-to-right) form; build it with "
                       "causal=True")
    h, n = x.shape[-1], self.state_size
    nu_log = self.param("nu_log", nu_log_init, (n,), self.r_min, self.r_max)
    theta_log = self.param("theta_log", theta_log_init, (n,), self.max_phase)
    # gamma_log = log sqrt(1 - |lambda|^2) at init (sec. 3.4), then trained.
    gamma_log = self.param(
        "gamma_log", lambda rng, shape: jnp.log(jnp.sqrt(1.0 - jnp.abs(
            lru_lambda(nu_log, theta_log)) ** 2)), (n,))
    normal = lambda scale: nn.initializers.normal(stddev=scale)
    b_re = self.param("B_re", normal(1.0 / math.sqrt(2 * h)), (n, h))
    b_im = self.param("B_im", normal(1.0 / math.sqrt(2 * h)), (n, h))
    c_re = self.param("C_re", normal(1.0 / math.sqrt(n)), (h, n))
    c_im = self.param("C_im", normal(1.0 / math.sqrt(n)), (h, n))
    c_backward = None
    if self.bidirectional:
      c_backward = (self.param("C2_re", normal(1.0 / math.sqrt(n)), (h, n))
                    + 1j * self.param("C2_im", normal(1.0 / math.sqrt(n)), (h, n)))
    d = self.param("D", normal(1.0), (h,))

    lam = lru_lambda(nu_log, theta_log)
    b = (b_re + 1j * b_im) * jnp.exp(gamma_log)[:, None]  # gamma * B (sec. 3.4)
    u = zero_padding(x, mask)
    if decode:
      state = self.variable("cache", "state", jnp.zeros, (x.shape[0], n), jnp.complex64)
      stepping, _ = decoding.decode_index(self)
      if stepping:
        return self._decode(u, state, lam, b, c_re + 1j * c_im, d).astype(x.dtype)
    y = lru_recurrence(u, lam, b, c_re + 1j * c_im, d, c_backward=c_backward)
    return y.astype(x.dtype)

  def _decode(self, u, state, lam, b, c, d):
    """One token u `[b, 1, h]` (float32): x_k = lambda x_{k-1} + gamma B u_k (eq. 7), y_k as
    lru_recurrence."""
    decoding.check_one_token(u, "lru")
    u_k = u[:, 0]
    x = lam * state.value + jnp.einsum("bh,nh->bn", u_k.astype(jnp.complex64), b)
    state.value = x
    return (jnp.einsum("hn,bn->bh", c, x).real + d * u_k)[:, None]
