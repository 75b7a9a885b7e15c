"""Skyformer (Chen et al. 2021, "Skyformer: Remodel Self-Attention with Gaussian Kernel and
Nyström Method", NeurIPS).

Kernelized Attention (sec. 4.1, eq. 1) replaces softmax by a Gaussian kernel, with no further
row normalisation (the kernel normalises itself, eq. 2):

  out = C V,  C_ij = kappa(q_i / p^(1/4), k_j / p^(1/4)),  kappa(x, y) = exp(-|x - y|^2 / 2),

i.e. exp(-|q_i - k_j|^2 / (2 sqrt(p))), p the head dimension. Skyformer (sec. 4.2) approximates
C by the Nyström method applied to the PSD completion of this non-PSD matrix: with
X = [Q; K] (2L rows) and B = kappa(X, X) (eq. 4), B ~ B S (S^T B S)^+ S^T B (eq. 5) for a
uniform sub-sampling S of d columns, and C is its upper-right block (eq. 6):

  C ~ kappa(Q, X_S) (S^T B S)^+ kappa(X_S, K),

computed right to left, kappa(Q, X_S) ((S^T B S)^+ (kappa(X_S, K) V)): O(L m p + m^3) for
m = `num_landmarks` landmarks, never an [L, L] array.

As the authors' code: the landmarks are drawn uniformly with replacement among the real tokens,
the first m // 2 of them from the queries and the rest from the keys (their `uniform_sketching`),
redrawn at every training step (here from the "dropout" rng; in evaluation fixed from `seed` and
the layer path, where their code redraws on every call: evaluation here is deterministic).
The pseudo-inverse (sec. 4.4, Lemma 3): M = S^T B S + gamma I (gamma = 0.1 in their code),
D_M = diag(M 1), and the Newton-Schulz iteration of Nyströmformer (eq. 16, reused from
`nystromformer.iterative_pinv`) inverts D_M^(-1/2) M D_M^(-1/2), whose singular values lie in
(0, 1); M^+ = D_M^(-1/2) (.)^+ D_M^(-1/2). `pinv_iterations` = 6 as theirs. Deviation: the
iteration starts from Nyströmformer's per-matrix Z_0 = A^T / (|A|_1 |A|_inf); the authors'
Skyformer code uses A^T / max column sum over the whole batch (after the D_M scaling |A|_inf is
close to 1, so the two nearly coincide; per matrix keeps examples independent of their batch).

Exactness limit: with all 2L rows of [Q; K] as landmarks and gamma = 0, eq. 5 is exact (the
Gaussian kernel matrix of distinct points is invertible), so the output is exact Kernelized
Attention up to the pseudo-inverse iteration (tests/test_attention_skyformer.py). Padding:
landmarks are drawn among real tokens only, padded keys are removed from kappa(X_S, K) and V,
outputs at padded queries are 0. At most lq + lk landmarks are drawn (the rows there are;
`num_landmarks` above that is capped). No causal form (landmarks come from the whole sequence), no
cross attention (the paper defines self-attention only), no attention dropout (no weights are
formed; the authors' Skyformer applies none).
"""
from __future__ import annotations

import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from models.attention import masks
from models.attention.nystromformer import iterative_pinv
from models.attention.registry import register


def gaussian_kernel(x, y):
  """kappa(x, y) = exp(x.y - |x|^2/2 - |y|^2/2) for x `[..., n, p]`, y `[..., m, p]`."""
  half_x = 0.5 * jnp.sum(x * x, axis=-1)[..., :, None]
  half_y = 0.5 * jnp.sum(y * y, axis=-1)[..., None, :]
  return jnp.exp(x @ jnp.swapaxes(y, -1, -2) - half_x - half_y)


def sample_landmarks(key, q_mask, kv_mask, batch: int, lq: int, lk: int, num_landmarks: int):
  """`[b, m]` indices into [Q; K] (keys offset by lq): m // 2 uniform draws with replacement
  among real queries, the rest among real keys (the authors' uniform_sketching)."""
  q_mask = jnp.ones((batch, lq), bool) if q_mask is None else q_mask
  kv_mask = jnp.ones((batch, lk), bool) if kv_mask is None else kv_mask
  num_q = num_landmarks // 2
  uniform = jax.random.uniform(key, (batch, num_landmarks))

  def draw(u, mask):
    # The r-th real token, r = floor(u * #real): real positions come first in a stable argsort.
    real = jnp.sum(mask, axis=-1, keepdims=True)
    rank = jnp.minimum(jnp.floor(u * real), jnp.maximum(real - 1, 0)).astype(jnp.int32)
    order = jnp.argsort(~mask, axis=-1, stable=True)
    return jnp.take_along_axis(order, rank, axis=-1)

  return jnp.concatenate([draw(uniform[:, :num_q], q_mask),
                          lq + draw(uniform[:, num_q:], kv_mask)], axis=-1)


@functools.partial(jax.jit, static_argnames=("pinv_iterations",))
def skyformer_attention(q, k, v, landmark_index, *, q_mask=None, kv_mask=None, gamma=0.1,
                        pinv_iterations=6):
  """Pure function. q `[b, lq, h, p]`, k/v `[b, lk, h, p]`, landmark_index int `[b or 1, m]`
  (rows of [Q; K]), masks bool `[b, l]`. float32 inside, returns v's dtype."""
  out_dtype = v.dtype
  keep = jnp.ones(k.shape[:2], bool) if kv_mask is None else kv_mask
  v = jnp.where(keep[:, :, None, None], v, 0.0)
  scale = q.shape[-1] ** -0.25   # x / p^(1/4): bandwidth p^(1/4) (sec. 4.1)
  q, k, v = (rearrange(t.astype(jnp.float32), "b l h p -> b h l p") for t in (q, k, v))
  q, k = q * scale, k * scale
  rows = jnp.concatenate([q, k], axis=2)                                   # [b, h, 2L, p]
  index = jnp.broadcast_to(landmark_index, (q.shape[0], landmark_index.shape[-1]))
  landmarks = jnp.take_along_axis(rows, index[:, None, :, None], axis=2)  # [b, h, m, p]
  kernel_q = gaussian_kernel(q, landmarks)                                  # [b, h, lq, m]
  kernel_k = gaussian_kernel(k, landmarks) * keep[:, None, :, None]         # [b, h, lk, m]
  # Sec. 4.4: M = S^T B S + gamma I, scaled by D_M^(-1/2) on both sides before eq. 16.
  eye = jnp.eye(landmarks.shape[2], dtype=jnp.float32)
  middle = gaussian_kernel(landmarks, landmarks) + gamma * eye
  d_inv_sqrt = jax.lax.rsqrt(jnp.sum(middle, axis=-1))                     # [b, h, m]
  scaled = d_inv_sqrt[..., :, None] * middle * d_inv_sqrt[..., None, :]
  middle_pinv = (d_inv_sqrt[..., :, None] * iterative_pinv(scaled, pinv_iterations, "per_matrix")
                 * d_inv_sqrt[..., None, :])
  # Eq. 6, right to left.
  out = kernel_q @ (middle_pinv @ jnp.einsum("bhlm,bhlp->bhmp", kernel_k, v))
  out = rearrange(out, "b h l p -> b l h p")
  return masks.zero_padded_queries(out, q_mask).astype(out_dtype)


@register("skyformer", causal=False, cross=False)
class SkyformerAttention(nn.Module):
  """Nyström-approximated Gaussian-kernel attention over landmarks sampled from [Q; K]."""
  num_landmarks: int = 128      # d of eq. 5: the paper's LRA setting ("128 features", sec. 5)
  gamma: float = 0.1            # regulariser of S^T B S (sec. 4.4; their code's 1e-1)
  pinv_iterations: int = 6      # eq. 16 iterations, as their code
  redraw: bool = True           # new landmarks at every training step
  seed: int = 0

  def __post_init__(self):
    super().__post_init__()
    where = "config.model.attention_kwargs"
    if self.num_landmarks < 2:
      raise ValueError(f"skyformer num_landmarks={self.num_landmarks} ({where}); expected >= 2 "
                       "(half from the queries, half from the keys)")
    if self.pinv_iterations < 1:
      raise ValueError(f"skyformer pinv_iterations={self.pinv_iterations} ({where}); "
                       "expected >= 1")
    if self.gamma < 0:
      raise ValueError(f"skyformer gamma={self.gamma} ({where}); expected >= 0")

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    if self.redraw and not deterministic:
      key = self.make_rng("dropout")
    else:
      path = "/".join(str(part) for part in self.scope.path)
      key = jax.random.fold_in(jax.random.key(self.seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)
    # Never more landmarks than the 2L rows of [Q; K] they are drawn from: at a short length
    # (the :quick presets' 40 tokens against the paper's 128 landmarks) more draws only repeat
    # rows, and the m^3 pseudo-inverse would dominate the step.
    num_landmarks = min(self.num_landmarks, q.shape[1] + k.shape[1])
    index = sample_landmarks(key, q_mask, kv_mask, q.shape[0], q.shape[1], k.shape[1],
                             num_landmarks)
    return skyformer_attention(q, k, v, index, q_mask=q_mask, kv_mask=kv_mask, gamma=self.gamma,
                               pinv_iterations=self.pinv_iterations)
