"""S5: Simplified State Space Layers (Smith, Warrington & Linderman, ICLR 2023).

One multi-input multi-output SSM per layer (sec. 3): the H input features drive a diagonal
complex state of size P through B~ (P x H), the output is y_k = Re(C~ x_k) + D u_k with C~
(H x P) and a real skip D (H). The state matrix is initialised with HiPPO-N, the normal part of
HiPPO-LegS (sec. 4.1, App. B.1.1): S = A_LegS + p p^T with p_n = sqrt(n + 1/2) is -1/2 I plus a
skew-symmetric matrix, so S = V Lambda V^* with Re(Lambda) = -1/2; B~ = V^{-1} B and C~ = C V are
the input and output matrices in that eigenbasis (App. B.1.1, eq. 9). Optionally the state is J
blocks, each initialised with HiPPO-N of size P/J (App. B.1.2; `blocks`). With conjugate symmetry
(App. B.1.1 / the authors' `conj_sym`) only the P/2 eigenvalues with negative imaginary part are
kept and the output is 2 Re(C~ x). Each state has its own timescale Delta_p = exp(log_step_p),
log_step ~ U[log dt_min, log dt_max] (sec. 4.3); discretisation by zero-order hold (eq. 6:
Lambda_bar = exp(Lambda Delta), B_bar = (Lambda_bar - 1) / Lambda * B~) or bilinear (App. A).
The recurrence x_k = Lambda_bar x_{k-1} + B_bar u_k runs as a parallel scan (sec. 3.2).

Details taken from the authors' code (lindermanlab/S5, s5/ssm.py and s5/ssm_init.py):
- B is sampled lecun_normal as a real P x H matrix, then B~ = V^{-1} B (init_VinvB).
- C init `C_init`: "trunc_standard_normal" (each row lecun-normal over P, i.e. variance 1/P,
  complex, then C~ = C V), "lecun_normal" (lecun-normal over the whole (H, P, 2) array, fan-in
  P*H as jax computes it there, then C V), "complex_normal" (C~ drawn directly, std sqrt(1/2)).
- D ~ N(0, 1). `clip_eigs` clips Re(Lambda) to <= -1e-4 in the forward pass. `step_rescale`
  multiplies every Delta (e.g. for a different sampling rate at test time).
- bidirectional: a second scan runs backwards over the same Lambda_bar, B_bar; its states are
  read by a second output matrix C2 and the two readouts are summed (apply_ssm concatenates the
  states and C~ = [C1, C2], which is the same sum).
The layer's GELU / GLU / norm / residual are the shared block's (`config.model.ffn`, `norm`).

Incremental decoding (decode="recurrent", the causal form only): the cache holds the state
x_{k-1} `[b, P']` complex64 (P' = P/2 with conj_sym), whatever the length; each token takes
one step of the recurrence x_k = Lambda_bar x_{k-1} + B_bar u_k (sec. 2.2, eq. 6's
discretisation) and reads y_k = Re(C~ x_k) (2 Re with conj_sym) + D u_k.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.attention import decoding
from models.attention._diagonal_scan import diagonal_scan, zero_padding
from models.attention.registry import register

DISCRETIZATIONS = ("zoh", "bilinear")
C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")


def hippo_legs(n: int) -> np.ndarray:
  """HiPPO-LegS (Gu et al. 2020): A_nk = -sqrt(2n+1) sqrt(2k+1) for n > k, -(n+1) for n = k,
  0 above the diagonal (float64)."""
  q = np.sqrt(1.0 + 2.0 * np.arange(n))
  return -(np.tril(np.outer(q, q)) - np.diag(np.arange(n, dtype=np.float64)))


def hippo_n(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """HiPPO-N (S5 App. B.1.1): the normal part S = A_LegS + p p^T, p_n = sqrt(n + 1/2), and its
  eigendecomposition S = V diag(Lambda) V^*. Returns (Lambda [n] complex, V [n, n] unitary,
  S [n, n] real). Lambda is sorted by imaginary part (ascending), so for even n the first n/2
  are the eigenvalues with negative imaginary part, whose conjugates are the other half."""
  p = np.sqrt(np.arange(n) + 0.5)
  normal = hippo_legs(n) + np.outer(p, p)
  real_part = np.mean(np.diag(normal))  # -1/2: S + I/2 is skew-symmetric
  skew = normal - np.diag(np.diag(normal))
  # -i * skew is Hermitian: its real eigenvalues are the imaginary parts of S's eigenvalues.
  imag, v = np.linalg.eigh(-1j * skew)
  return real_part + 1j * imag, v, normal


def s5_init(state_size: int, blocks: int, conj_sym: bool):
  """Lambda [P'] and the block-diagonal V [P, P'] used to initialise S5 (App. B.1.2): `blocks`
  copies of HiPPO-N of size P/blocks; with conj_sym only the first half of each block (P' = P/2)."""
  block = state_size // blocks
  lam, v, _ = hippo_n(block)
  if conj_sym:
    lam, v = lam[:block // 2], v[:, :block // 2]
  return np.tile(lam, blocks), np.kron(np.eye(blocks), v)


def discretize(lam, b_tilde, delta, method="zoh"):
  """Diagonal continuous -> discrete SSM. lam [P] complex, b_tilde [P, H] complex, delta [P].
  zoh (S5 eq. 6): Lambda_bar = exp(Lambda Delta), B_bar = (Lambda_bar - 1) / Lambda * B~.
  bilinear (S5 App. A): Lambda_bar = (1 + Delta/2 Lambda) / (1 - Delta/2 Lambda),
  B_bar = Delta / (1 - Delta/2 Lambda) * B~."""
  if method == "zoh":
    lam_bar = jnp.exp(lam * delta)
    return lam_bar, ((lam_bar - 1.0) / lam)[:, None] * b_tilde
  if method == "bilinear":
    inv = 1.0 / (1.0 - 0.5 * delta * lam)
    return inv * (1.0 + 0.5 * delta * lam), (inv * delta)[:, None] * b_tilde
  raise ValueError(f"s5 discretization={method!r}; expected one of {DISCRETIZATIONS}")


def s5_ssm(u, lam_bar, b_bar, c_tilde, d, *, conj_sym=True, c_backward=None):
  """Pure function. u `[b, l, h]` float32 (zero at padding), lam_bar [P], b_bar [P, h],
  c_tilde [h, P] complex, d [h]. y = Re(C~ x) (2 Re with conj_sym) + D u; with `c_backward`
  a backward scan's states are read by it and added (bidirectional)."""
  bu = jnp.einsum("blh,ph->blp", u.astype(jnp.complex64), b_bar)
  read = lambda c, states: jnp.einsum("hp,blp->blh", c, states).real
  y = read(c_tilde, diagonal_scan(lam_bar, bu))
  if c_backward is not None:
    y = y + read(c_backward, diagonal_scan(lam_bar, bu, reverse=True))
  if conj_sym:
    y = 2.0 * y
  return y + d * u


def _complex(param):
  return param[..., 0] + 1j * param[..., 1]


@register("s5", causal=True, cross=False, kind="sequence", decode="recurrent")
class S5(nn.Module):
  """The S5 SSM (s5/ssm.py's S5SSM); `state_size` is P, the HiPPO-N size (the authors'
  ssm_size_base): with `conj_sym` the layer keeps P/2 complex states."""
  causal: bool = False
  state_size: int = 256        # P (run_train.py --ssm_size_base default)
  blocks: int = 8              # J (--blocks default)
  conj_sym: bool = True
  discretization: str = "zoh"  # DISCRETIZATIONS
  c_init: str = "trunc_standard_normal"  # C_INITS (--C_init default)
  dt_min: float = 0.001
  dt_max: float = 0.1
  clip_eigs: bool = False
  bidirectional: bool = False
  step_rescale: float = 1.0

  def _check(self):
    if self.causal and self.bidirectional:
      raise ValueError("s5: causal=True and bidirectional=True together; a causal model reads "
                       "left to right only (set bidirectional=False)")
    if self.discretization not in DISCRETIZATIONS:
      raise ValueError(f"s5 discretization={self.discretization!r}; expected one of "
                       f"{DISCRETIZATIONS}")
    if self.c_init not in C_INITS:
      raise ValueError(f"s5 c_init={self.c_init!r}; expected one of {C_INITS}")
    if self.state_size < 1 or self.blocks < 1 or self.state_size % self.blocks:
      raise ValueError(f"s5 state_size={self.state_size} must be a positive multiple of "
                       f"blocks={self.blocks}")
    if self.conj_sym and (self.state_size // self.blocks) % 2:
      raise ValueError(f"s5 conj_sym=True needs an even block size state_size/blocks; got "
                       f"state_size={self.state_size}, blocks={self.blocks}")
    if not 0.0 < self.dt_min <= self.dt_max:
      raise ValueError(f"s5 dt_min={self.dt_min}, dt_max={self.dt_max}; expected "
                       "0 < dt_min <= dt_max")
    if self.step_rescale <= 0.0:
      raise ValueError(f"s5 step_rescale={self.step_rescale}; expected > 0")

  @nn.compact
  def __call__(self, x, mask=None, deterministic=True, decode=False):
    self._check()
    if decode and not self.causal:
      raise ValueError("s5: decode=True needs the causal (left-to-right) form; build it with "
                       "causal=True")
    h = x.shape[-1]
    lam_init, v = s5_init(self.state_size, self.blocks, self.conj_sym)
    v_inv = v.conj().T  # V is unitary (block-diagonal of unitary blocks)
    p_full, p_kept = v.shape

    def b_init(rng, shape):
      b = nn.initializers.lecun_normal()(rng, (p_full, h))
      b_tilde = jnp.asarray(v_inv, jnp.complex64) @ b  # B~ = V^{-1} B
      return jnp.stack([b_tilde.real, b_tilde.imag], -1)

    def c_init(rng, shape):
      if self.c_init == "complex_normal":
        return nn.initializers.normal(stddev=0.5 ** 0.5)(rng, (h, p_kept, 2))
      if self.c_init == "trunc_standard_normal":  # each row: lecun-normal over P (fan-in P)
        sampler = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                   in_axis=-2, out_axis=-1, batch_axis=(0,))
      else:  # "lecun_normal" over (H, P, 2): fan-in P * H, as in the authors' code
        sampler = nn.initializers.lecun_normal()
      c_tilde = _complex(sampler(rng, (h, p_full, 2))) @ jnp.asarray(v, jnp.complex64)  # C~ = C V
      return jnp.stack([c_tilde.real, c_tilde.imag], -1)

    def log_step_init(rng, shape):
      return jax.random.uniform(rng, shape, jnp.float32, np.log(self.dt_min),
                                np.log(self.dt_max))

    lam_re = self.param("Lambda_re", lambda rng, s: jnp.asarray(lam_init.real, jnp.float32),
                        (p_kept,))
    lam_im = self.param("Lambda_im", lambda rng, s: jnp.asarray(lam_init.imag, jnp.float32),
                        (p_kept,))
    b = self.param("B", b_init, (p_kept, h, 2))
    c = self.param("C", c_init, (h, p_kept, 2))
    c_backward = self.param("C2", c_init, (h, p_kept, 2)) if self.bidirectional else None
    d = self.param("D", nn.initializers.normal(stddev=1.0), (h,))
    log_step = self.param("log_step", log_step_init, (p_kept,))

    if self.clip_eigs:  # keep the continuous-time system stable (authors' clip_eigs)
      lam_re = jnp.minimum(lam_re, -1e-4)
    lam = lam_re + 1j * lam_im
    delta = self.step_rescale * jnp.exp(log_step)
    lam_bar, b_bar = discretize(lam, _complex(b), delta, self.discretization)
    u = zero_padding(x, mask)
    if decode:
      state = self.variable("cache", "state", jnp.zeros, (x.shape[0], p_kept), jnp.complex64)
      stepping, _ = decoding.decode_index(self)
      if stepping:
        return self._decode(u, state, lam_bar, b_bar, _complex(c), d).astype(x.dtype)
    y = s5_ssm(u, lam_bar, b_bar, _complex(c), d, conj_sym=self.conj_sym,
               c_backward=None if c_backward is None else _complex(c_backward))
    return y.astype(x.dtype)

  def _decode(self, u, state, lam_bar, b_bar, c_tilde, d):
    """One token u `[b, 1, h]` (float32): x_k = Lambda_bar x_{k-1} + B_bar u_k, y_k as s5_ssm."""
    decoding.check_one_token(u, "s5")
    u_k = u[:, 0]
    x = lam_bar * state.value + jnp.einsum("bh,ph->bp", u_k.astype(jnp.complex64), b_bar)
    state.value = x
    y = jnp.einsum("hp,bp->bh", c_tilde, x).real
    if self.conj_sym:
      y = 2.0 * y
    return (y + d * u_k)[:, None]
