"""H3, Hungry Hungry Hippos (Fu, Dao, Saab, Thomas, Rudra, Re 2023, sec. 3.1, Algorithm 1).

    q, k, v = W_q x, W_k x, W_v x                     (linear maps with bias)
    k      <- shift_ssm(k) + D_shift * k              (a learned causal FIR of N taps)
    kv     =  k (outer) v per head                    (head_dim = 1: elementwise k * v)
    y      =  diag_ssm(kv) + D * kv                   (S4D kernel, FFT convolution at 2L)
    out    =  W_o (sum_i q_i y_ij)                    (per head; head_dim = 1: q * y)

As in the authors' code (HazyResearch/H3 src/models/ssm/h3.py; ss_kernel_shift.py;
ss_kernel_diag.py; dplr.py):
- Shift SSM: A is the N x N shift matrix, so its kernel is k[j] = sum_m B[m] C[m + j] for
  j < N and 0 after (ss_kernel_shift.py: irfft(conj(rfft B) * rfft C)[:N]); B starts at e_1
  (so k = C at init), C ~ U(+-1/sqrt(N)) (torch's kaiming_uniform(a=sqrt 5) of their Conv1d-like
  init), its skip D_shift ~ N(0, 1).
- Diagonal SSM: N/2 complex modes (conjugate pairs), A = -exp(inv_A_real) + i A_imag with
  S4D-Lin init (real -1/2, imag pi n) or S4D-Inv; B = 1 (trainable), C ~ complex N(0, 1)
  (variance 1/2 per part), log_dt ~ U[log dt_min, log dt_max], D ~ N(0, 1). Kernel
  K[l] = 2 Re sum_n C'_n dA_n^l (a Vandermonde product); ZOH: dA = exp(dt A),
  C' = C B (exp(dt A) - 1) / A; bilinear: dA = (1 + dt A/2) / (1 - dt A/2), C' = C B dt/(1 - dt A/2).
  H3's extracted SSKernelDiag defaults to disc='bilinear'; the S4D paper and the brief use ZOH,
  our default; both are here (`disc`).
- Heads (`head_dim`): channel c = h * head_dim + d within a head; kv[h, d1, d2] = k[h, d1] v[h, d2]
  shares head h's diagonal-SSM kernel and D; the output's channel is d2 * heads + h (their
  'b d h l -> b (d h) l'), then the output projection. head_dim = 1 is the paper's default.
- H3 is a causal language-model layer; its code has no bidirectional form, so neither has this.
  `causal` is accepted (the registry passes it) and changes nothing: the layer is always causal.
- No dropout inside the layer (their `dropout` argument is "just to absorb the kwarg").

Incremental decoding (decode="recurrent"; H3 is a language-model layer, sec. 3.1 / 3.3 use its
recurrent view for generation): the shift SSM's state is its last N inputs k (`[b, N, features]`:
the shift matrix's state is exactly the past N inputs), the diagonal SSM's state
s_t = dA s_{t-1} + kv_t is `[b, heads, head_dim, head_dim, N/2]` complex64; both constant in L.

Padding: x, the shifted-SSM input k and the diagonal-SSM input kv are zeroed at padded
positions, so a padded token contributes nothing to any later output.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import _history, decoding
from models.attention.registry import register
from models.attention.s4d import vandermonde_sum

DISCRETIZATIONS = ("zoh", "bilinear")
MEASURES = ("diag-lin", "diag-inv")


def torch_linear_init():
  """torch.nn.Linear's default: U(+-1/sqrt(fan_in)) for weights (kaiming_uniform, a=sqrt 5)."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def s4d_a_init(measure: str, heads: int, state: int) -> tuple[np.ndarray, np.ndarray]:
  """(real, imag) parts of A, each [heads, state // 2] (S4D paper sec. 4; H3 dplr.py):
  S4D-Lin: -1/2 + i pi n; S4D-Inv: -1/2 + i (N / pi) (N / (2n + 1) - 1), N = state."""
  n = np.arange(state // 2, dtype=np.float64)
  if measure == "diag-lin":
    imag = np.pi * n
  elif measure == "diag-inv":
    imag = state / np.pi * (state / (1 + 2 * n) - 1)
  else:
    raise ValueError(f"h3 measure={measure!r}; expected one of {MEASURES}")
  real = -0.5 * np.ones_like(n)
  return (np.broadcast_to(real, (heads, state // 2)).astype(np.float32),
          np.broadcast_to(imag, (heads, state // 2)).astype(np.float32))


def shift_ssm_kernel(b, c, length: int):
  """Kernel of the shift SSM (x' = S x + B u, y = C x, S the down-shift): b, c `[H, N]` ->
  `[length, H]` with k[j] = sum_m b[m] c[m + j] for j < N, zero for j >= N."""
  n = b.shape[-1]
  j, m = np.arange(n)[:, None], np.arange(n)[None, :]
  idx = j + m
  c_shifted = jnp.where(idx < n, c[:, np.minimum(idx, n - 1)], 0.0)   # [H, j, m] = c[m + j]
  k = jnp.einsum("hm,hjm->jh", b, c_shifted)
  if length <= n:
    return k[:length]
  return jnp.pad(k, ((0, length - n), (0, 0)))


def s4d_kernel(log_dt, a_real, a_imag, b, c, length: int, disc: str = "zoh"):
  """S4D convolution kernel `[length, H]` from per-head log_dt `[H]`, A = a_real + i a_imag,
  complex B, C `[H, N/2]` (the N/2 kept modes of conjugate pairs, hence 2 Re)."""
  coef, log_da = diag_ssm_modes(log_dt, a_real, a_imag, b, c, disc)
  return 2.0 * vandermonde_sum(coef, log_da, length).real.T  # [L, H]


def diag_ssm_modes(log_dt, a_real, a_imag, b, c, disc: str = "zoh"):
  """(C', log dA), complex `[H, N/2]`: the kernel is K[l] = 2 Re sum_n C'_n dA_n^l, i.e. the
  recurrence s_l = dA s_{l-1} + u_l read as y_l = 2 Re sum_n C'_n s_l,n."""
  dt = jnp.exp(log_dt)[:, None]
  a = a_real + 1j * a_imag
  dta = a * dt
  if disc == "zoh":
    coef = c * b * (jnp.exp(dta) - 1.0) / a
    log_da = dta
  elif disc == "bilinear":
    coef = c * b * dt / (1.0 - dta / 2)
    log_da = jnp.log((1.0 + dta / 2) / (1.0 - dta / 2))
  else:
    raise ValueError(f"h3 disc={disc!r}; expected one of {DISCRETIZATIONS}")
  return coef, log_da


def causal_fft_conv(u, kernel):
  """y[t] = sum_{s <= t} kernel[s] u[t - s] along axis 1, by FFT at length 2L (no wrap-around).
  u: `[batch, L, ...channels]`; kernel: `[L, ...channels]`; float32 out."""
  length = u.shape[1]
  n = 2 * length
  # Transforms over the last axis (time moved there): 1.4x faster than over axis 1 on a CPU.
  u_f = jnp.fft.rfft(jnp.moveaxis(u.astype(jnp.float32), 1, -1), n=n)
  k_f = jnp.fft.rfft(jnp.moveaxis(kernel.astype(jnp.float32), 0, -1), n=n)
  return jnp.moveaxis(jnp.fft.irfft(u_f * k_f[None], n=n)[..., :length], -1, 1)


def h3_mix(q, k, v, shift_kernel, shift_d, ssm_kernel, d, head_dim: int, mask=None):
  """The H3 mixing (pure): q, k, v `[b, L, features]` float32; shift_kernel `[L, features]`,
  shift_d `[features]`, ssm_kernel `[L, heads]`, d `[heads]`. Returns `[b, L, features]`."""
  batch, length, features = q.shape
  heads = features // head_dim
  keep = None if mask is None else mask[:, :, None].astype(jnp.float32)
  if keep is not None:
    k = k * keep
  k = causal_fft_conv(k, shift_kernel) + shift_d * k
  k = k.reshape(batch, length, heads, head_dim)
  v = v.reshape(batch, length, heads, head_dim)
  kv = k[..., :, None] * v[..., None, :]                       # [b, L, h, d1, d2]
  if keep is not None:
    kv = kv * keep[..., None, None]
  y = causal_fft_conv(kv, ssm_kernel[:, :, None, None]) + d[:, None, None] * kv
  out = jnp.einsum("blhi,blhij->bljh", q.reshape(batch, length, heads, head_dim), y)
  return out.reshape(batch, length, features)                  # channel d2 * heads + h


@register("h3", causal=True, cross=False, kind="sequence", decode="recurrent")
class H3(nn.Module):
  """H3 layer; settings as in HazyResearch/H3 (d_state=64, head_dim=1, measure diag-lin)."""
  causal: bool = False      # H3 is causal by construction; no bidirectional form in its code
  d_state: int = 64         # N: shift-SSM taps and diagonal-SSM state size (N/2 complex modes)
  head_dim: int = 1
  measure: str = "diag-lin"  # S4D-Lin ("diag-inv": S4D-Inv)
  disc: str = "zoh"
  dt_min: float = 0.001
  dt_max: float = 0.1

  def _check(self, features):
    if self.d_state < 2 or self.d_state % 2:
      raise ValueError(f"h3 d_state={self.d_state}; expected an even number >= 2")
    if self.head_dim < 1 or features % self.head_dim:
      raise ValueError(f"h3 head_dim={self.head_dim} must be >= 1 and divide the width "
                       f"{features}")
    if self.measure not in MEASURES:
      raise ValueError(f"h3 measure={self.measure!r}; expected one of {MEASURES}")
    if self.disc not in DISCRETIZATIONS:
      raise ValueError(f"h3 disc={self.disc!r}; expected one of {DISCRETIZATIONS}")
    if not 0 < self.dt_min <= self.dt_max:
      raise ValueError(f"h3 dt_min={self.dt_min}, dt_max={self.dt_max}; expected "
                       "0 < dt_min <= dt_max")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    batch, length, features = x.shape
    self._check(features)
    heads, n = features // self.head_dim, self.d_state
    xf = x.astype(jnp.float32)
    if mask is not None:
      xf = jnp.where(mask[:, :, None], xf, 0.0)
    dense = lambda name: nn.Dense(features, kernel_init=torch_linear_init(),
                                  bias_init=torch_bias_init(features), name=name)
    q, k, v = dense("q_proj")(xf), dense("k_proj")(xf), dense("v_proj")(xf)

    # Shift SSM (ss_kernel.py mode='shift'): B = e_1, C ~ U(+-1/sqrt(N)), D ~ N(0, 1).
    shift_b = self.param("shift_B", lambda key, s: jnp.zeros(s).at[:, 0].set(1.0),
                         (features, n))
    shift_c = self.param("shift_C", torch_bias_init(n), (features, n))
    shift_d = self.param("shift_D", nn.initializers.normal(1.0), (features,))

    # Diagonal SSM (SSKernelDiag, real_type='exp': A_real = -exp(inv_A_real)).
    a_real0, a_imag0 = s4d_a_init(self.measure, heads, n)
    log_dt = self.param("log_dt", lambda key, s: jax.random.uniform(
        key, s, jnp.float32, math.log(self.dt_min), math.log(self.dt_max)), (heads,))
    inv_a_real = self.param("inv_A_real", lambda key, s: jnp.log(-jnp.asarray(a_real0)),
                            a_real0.shape)
    a_imag = self.param("A_imag", lambda key, s: jnp.asarray(a_imag0), a_imag0.shape)
    b = self.param("B", lambda key, s: jnp.stack([jnp.ones(s), jnp.zeros(s)], -1),
                   (heads, n // 2))
    c = self.param("C", nn.initializers.normal(math.sqrt(0.5)), (heads, n // 2, 2))
    d = self.param("D", nn.initializers.normal(1.0), (heads,))

    ssm = (log_dt, -jnp.exp(inv_a_real), a_imag, b[..., 0] + 1j * b[..., 1],
           c[..., 0] + 1j * c[..., 1])
    out_proj = nn.Dense(features, kernel_init=torch_linear_init(),
                        bias_init=torch_bias_init(features), name="out_proj")
    if decode:
      shift_state = self.variable("cache", "shift_state", jnp.zeros, (batch, n, features),
                                  jnp.float32)
      ssm_state = self.variable("cache", "ssm_state", jnp.zeros,
                                (batch, heads, self.head_dim, self.head_dim, n // 2),
                                jnp.complex64)
      stepping, _ = decoding.decode_index(self)
      if stepping:
        y = self._decode(q, k, v, mask, shift_state, ssm_state, shift_ssm_kernel(
            shift_b, shift_c, n), shift_d, diag_ssm_modes(*ssm, self.disc), d)
        return out_proj(y).astype(x.dtype)
    shift_kernel = shift_ssm_kernel(shift_b, shift_c, length)
    ssm_kernel = s4d_kernel(*ssm, length, self.disc)
    y = h3_mix(q, k, v, shift_kernel, shift_d, ssm_kernel, d, self.head_dim, mask)
    return out_proj(y).astype(x.dtype)

  def _decode(self, q, k, v, mask, shift_state, ssm_state, shift_kernel, shift_d, modes, d):
    """One token (q, k, v `[b, 1, features]`): h3_mix's steps as recurrences. The shift SSM
    reads its last N inputs (kernel `[N, features]`, lag 0 last in the window); the diagonal
    SSM steps s = dA s + kv and reads 2 Re sum_n C'_n s_n (diag_ssm_modes)."""
    decoding.check_one_token(q, "h3")
    batch, _, features = q.shape
    heads = features // self.head_dim
    q, k, v = q[:, 0], k[:, 0], v[:, 0]
    keep = None if mask is None else mask[:, :1].astype(jnp.float32)   # [b, 1]
    if keep is not None:
      k = k * keep
    window = _history.push_window(shift_state.value, k)             # [b, N, features]
    shift_state.value = window
    k = jnp.einsum("bjc,jc->bc", window[:, ::-1], shift_kernel) + shift_d * k
    k = k.reshape(batch, heads, self.head_dim)
    kv = k[..., :, None] * v.reshape(batch, heads, self.head_dim)[..., None, :]   # [b, h, i, j]
    if keep is not None:
      kv = kv * keep[..., None, None]
    coef, log_da = modes                                             # [h, N/2]
    s = jnp.exp(log_da)[:, None, None] * ssm_state.value + kv[..., None]
    ssm_state.value = s
    y = 2.0 * jnp.einsum("hn,bhijn->bhij", coef, s).real + d[:, None, None] * kv
    out = jnp.einsum("bhi,bhij->bjh", q.reshape(batch, heads, self.head_dim), y)
    return out.reshape(batch, 1, features)                          # channel d2 * heads + h
