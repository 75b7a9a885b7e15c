"""Nyströmformer (Xiong et al. 2021, "Nyströmformer: A Nyström-Based Algorithm for
Approximating Self-Attention", AAAI).

Softmax attention S = softmax(Q K^T / sqrt(d)) is approximated through m landmarks (eq. 14):

  S ~= F A^+ B,  F = s(Q K~^T) [L, m],  A = s(Q~ K~^T) [m, m],  B = s(Q~ K^T) [m, L],

s(.) the row softmax of scaled dot products, and the output is computed right to left,
F (A^+ (B V)) (eq. 15), so time and memory are O(L m): no [L, L] array exists.
Landmarks Q~, K~ are segment means (sec. 3.3): the length is cut into m consecutive segments
of ceil(L / m) tokens (padded up at the end) and each segment is averaged (reshape + mean).
A^+ is the iterative Moore-Penrose approximation (eq. 16, Razavi et al. 2014):

  Z_0 = A^T / (||A||_1 ||A||_inf),  Z_{j+1} = 1/4 Z_j (13 I - A Z_j (15 I - A Z_j (7 I - A Z_j))),

`pinv_iterations` = 6 as in the paper. `pinv_init="per_matrix"` (default) takes the norms per
(example, head): eq. 16 read literally, and the initialisation the authors later added and
recommend. `"original"` is their first code's: one maximum of column sums over the whole
batch and all heads, so an example's output depends slightly on the rest of its batch.
The authors' code adds a skip connection: a depthwise 1-D convolution over the sequence of V,
one length-`conv_kernel_size` kernel per head shared by its head_dim channels, no bias
(`conv_kernel_size=0` turns it off).

Padding (this repository's masks; the authors' code instead averages zeroed padded tokens into
the landmarks): landmarks are *masked* means over real tokens, a segment that holds no real
token is dropped (its rows and columns of F, A, B become zeros, which the pinv iteration keeps
at zero, so the result equals the same input without that segment), padded keys are removed
from B, V is zeroed at padding before B V and the convolution, outputs at padded queries are 0.
A length not divisible by m is padded up internally; since empty segments drop out exactly,
this uses ceil(L / ceil(L / m)) <= m landmarks of ceil(L / m) tokens. With m >= L every token
is its own landmark and the method is exact softmax attention up to the pinv iteration.

Defaults: 64 landmarks, one of the settings the authors' LRA code runs (`nystrom-32` ...
`nystrom-256`, always with conv_kernel_size 35); which one the paper's LRA table used is not
stated in the sources checked. 64 was chosen over 128 as the faster of the two here (a
median of about 130 against 180 ms per attention-layer train step at length 4096 on a 2-core
CPU). There is no causal form (landmarks average over the whole sequence) and no attention
dropout (the authors' Nyström attention has none).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from models.attention import masks
from models.attention.registry import register

PINV_INITS = ("original", "per_matrix")


def check_settings(num_landmarks, pinv_iterations, pinv_init, conv_kernel_size=0):
  """Clear errors naming the attention_kwargs field."""
  where = "config.model.attention_kwargs"
  if num_landmarks < 1:
    raise ValueError(f"nystromformer num_landmarks={num_landmarks} ({where}); expected >= 1")
  if pinv_iterations < 1:
    raise ValueError(f"nystromformer pinv_iterations={pinv_iterations} ({where}); "
                     "expected >= 1 (the paper uses 6)")
  if pinv_init not in PINV_INITS:
    raise ValueError(f"nystromformer pinv_init={pinv_init!r} ({where}); expected one of "
                     f"{PINV_INITS}")
  if conv_kernel_size < 0 or (conv_kernel_size and conv_kernel_size % 2 == 0):
    raise ValueError(f"nystromformer conv_kernel_size={conv_kernel_size} ({where}); expected "
                     "0 (no convolution) or an odd size (a centred window)")


def segment_means(x, mask, num_landmarks: int):
  """Landmarks (sec. 3.3): masked means of consecutive segments.

  x `[b, l, h, d]`, mask bool `[b, l]` or None -> (landmarks `[b, m, h, d]`, real `[b, m]`),
  m = ceil(l / s) with segment length s = ceil(l / num_landmarks); `real` is False for a
  segment without real tokens (its landmark is 0 and must be masked by the caller).
  """
  means, real = _segment_means(rearrange(x, "b l h d -> b h l d"), mask, num_landmarks)
  return rearrange(means, "b h m d -> b m h d"), real


def _segment_means(x, mask, num_landmarks: int):
  """`segment_means` on heads-major x `[b, h, l, d]` -> (`[b, h, m, d]`, `[b, m]`)."""
  batch, heads, length, depth = x.shape
  size = -(-length // num_landmarks)
  count = -(-length // size)
  keep = jnp.ones((batch, length), bool) if mask is None else mask
  x = jnp.where(keep[:, None, :, None], x, 0.0)
  pad = count * size - length
  x = jnp.pad(x, ((0, 0), (0, 0), (0, pad), (0, 0)))
  keep = jnp.pad(keep, ((0, 0), (0, pad)))
  sums = x.reshape(batch, heads, count, size, depth).sum(axis=3)
  tokens = keep.reshape(batch, count, size).sum(axis=2)
  means = sums / jnp.maximum(tokens, 1)[:, None, :, None].astype(x.dtype)
  return means, tokens > 0


def iterative_pinv(a, iterations: int = 6, init: str = "per_matrix"):
  """Moore-Penrose pseudo-inverse of `a` `[..., n, m]` by eq. 16 (returns `[..., m, n]`)."""
  norm_1 = jnp.sum(jnp.abs(a), axis=-2)     # column sums: ||A||_1 is their max
  norm_inf = jnp.sum(jnp.abs(a), axis=-1)   # row sums: ||A||_inf is their max (1 for softmax)
  if init == "original":   # the authors' code: one global maximum over batch and heads
    scale = jnp.max(norm_1) * jnp.max(norm_inf)
  else:
    scale = jnp.max(norm_1, axis=-1) * jnp.max(norm_inf, axis=-1)
    scale = scale[..., None, None]
  scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero A (all padding) gives Z = 0
  z = jnp.swapaxes(a, -1, -2) / scale
  eye = jnp.eye(a.shape[-2], dtype=a.dtype)
  for _ in range(iterations):
    az = a @ z
    z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
  return z


def _masked_softmax(logits, key_real):
  """Row softmax of `[b, h, n, k]` over keys with `key_real` `[b, k]` True."""
  logits = jnp.where(key_real[:, None, None, :], logits, masks.big_negative(logits.dtype))
  return jax.nn.softmax(logits, axis=-1)


def shifted_sum(x, kernel):
  """out_i = sum_t w_t x_(i + t - w//2) per head on x `[b, h, l, d]`, kernel `[w, h]`: a centred,
  zero-padded correlation (the authors' grouped Conv2d), one loop fusion over the taps."""
  width, length = kernel.shape[0], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (0, 0), (width // 2, width // 2), (0, 0)))
  return sum(kernel[t][None, :, None, None] * padded[:, :, t:t + length] for t in range(width))


@jax.custom_vjp
def _conv_heads_major(v, kernel):
  """`shifted_sum` with a hand-written backward pass (autodiff makes one reduction per tap)."""
  return shifted_sum(v, kernel)


def _conv_forward(v, kernel):
  return shifted_sum(v, kernel), (v, kernel)


def _conv_backward(residuals, grad):
  v, kernel = residuals
  width, heads = kernel.shape
  half = width // 2
  # The adjoint of a correlation is the correlation with the reversed kernel.
  d_v = shifted_sum(grad, kernel[::-1])
  # d w_t = sum_i g_i . v_(i + t - half). In blocks of B >= half tokens, output block n only
  # meets input blocks n - 1, n, n + 1: three batched [B, d] x [d, B] products per block.
  batch, _, length, depth = v.shape
  size = max(32, half)
  count = -(-length // size)
  blocks = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, count * size - length), (0, 0))).reshape(
      batch, heads, count, size, depth)
  g_blocks, v_blocks = blocks(grad), blocks(v)
  rows, cols = jnp.arange(size)[:, None], jnp.arange(size)[None, :]
  d_kernel = jnp.zeros((width + 1, heads), kernel.dtype)   # the last row collects no tap
  for offset in (-1, 0, 1):
    if offset == -1:
      g_part, v_part = g_blocks[:, :, 1:], v_blocks[:, :, :-1]
    elif offset == 1:
      g_part, v_part = g_blocks[:, :, :-1], v_blocks[:, :, 1:]
    else:
      g_part, v_part = g_blocks, v_blocks
    products = jnp.einsum("bhnrd,bhncd->bhnrc", g_part, v_part).sum(axis=(0, 2))  # [h, B, B]
    tap = cols - rows + half + offset * size
    tap = jnp.where((tap >= 0) & (tap < width), tap, width).reshape(-1)
    d_kernel = d_kernel + jax.ops.segment_sum(products.reshape(heads, -1).T, tap,
                                              num_segments=width + 1)
  return d_v, d_kernel[:width]


_conv_heads_major.defvjp(_conv_forward, _conv_backward)


@functools.partial(jax.jit, static_argnames=("num_landmarks", "pinv_iterations", "pinv_init"))
def nystrom_attention(q, k, v, conv_kernel=None, *, q_mask=None, kv_mask=None,
                      num_landmarks=64, pinv_iterations=6, pinv_init="per_matrix"):
  """Pure function. q `[b, lq, h, d]`, k/v `[b, lk, h, d]`, masks bool `[b, l]`.

  `conv_kernel` `[w, h]` (odd w) adds the depthwise-convolution skip on V; it needs lq == lk
  (self-attention). Computed in float32 (the authors disable mixed precision here too).
  Internally heads-major (`[b, h, l, d]`): every product below is a plain batched matmul.
  """
  check_settings(num_landmarks, pinv_iterations, pinv_init)
  if conv_kernel is not None and q.shape[1] != k.shape[1]:
    raise ValueError("nystromformer's convolution skip needs self-attention (lq == lk); "
                     "pass conv_kernel=None")
  out_dtype = v.dtype
  kv_real = jnp.ones(k.shape[:2], bool) if kv_mask is None else kv_mask
  # Padded queries and keys need no zeroing: landmarks are masked means, padded keys are
  # masked out of B, and outputs at padded queries are zeroed at the end. V is zeroed, since
  # the convolution reads it directly.
  v = jnp.where(kv_real[:, :, None, None], v, 0.0)
  q, k, v = (rearrange(t.astype(jnp.float32), "b l h d -> b h l d") for t in (q, k, v))
  q_landmarks, q_real = _segment_means(q, q_mask, num_landmarks)
  k_landmarks, k_real = _segment_means(k, kv_mask, num_landmarks)
  # 1/sqrt(d) goes on the (small) landmark side of every product.
  scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
  k_landmarks_t = jnp.swapaxes(k_landmarks, -1, -2) * scale              # [b, h, d, m]
  # Eq. 14: the three softmax kernels; empty landmarks are masked as keys ...
  kernel_f = _masked_softmax(q @ k_landmarks_t, k_real)                   # [b, h, l, m]
  kernel_a = _masked_softmax(q_landmarks @ k_landmarks_t, k_real)         # [b, h, n, m]
  # B is kept transposed, `[b, h, l, n]` (softmax over l): no transposed copy of K is made.
  logits_b_t = jnp.where(kv_real[:, None, :, None],
                         k @ (jnp.swapaxes(q_landmarks, -1, -2) * scale),
                         masks.big_negative(k.dtype))
  kernel_b_t = jax.nn.softmax(logits_b_t, axis=-2)
  # ... and their rows/columns of A are zero, so A^+ is zero there too (the pinv iteration
  # keeps a zero row/column of A^T at zero) and they drop out of F A^+ B exactly.
  kernel_a = jnp.where(q_real[:, None, :, None] & k_real[:, None, None, :], kernel_a, 0.0)
  a_pinv = iterative_pinv(kernel_a, pinv_iterations, pinv_init)          # [b, h, m, n]
  # Eq. 15, right to left: F (A^+ (B V)), never an [L, L] product.
  out = kernel_f @ (a_pinv @ jnp.einsum("bhln,bhld->bhnd", kernel_b_t, v))
  if conv_kernel is not None:
    out = out + _conv_heads_major(v, conv_kernel)
  out = rearrange(out, "b h l d -> b l h d")
  return masks.zero_padded_queries(out, q_mask).astype(out_dtype)


def conv_init(key, shape, dtype=jnp.float32):
  """PyTorch's Conv default for this layer (the authors'): U(+-1/sqrt(fan_in)), fan_in = w."""
  bound = 1.0 / jnp.sqrt(float(shape[0]))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


# cross=False: the mixer cannot tell cross from self-attention of equal lengths (the registry
# does not pass `cross`), and the conv skip is only defined for self-attention. The pure
# function itself handles lq != lk without the conv.
@register("nystromformer", causal=False, cross=False)
class NystromAttention(nn.Module):
  """Nyström-approximated softmax attention with segment-mean landmarks and a conv skip."""
  num_landmarks: int = 64        # m; one of the authors' LRA settings (32-256)
  pinv_iterations: int = 6       # eq. 16 iterations, as the paper
  pinv_init: str = "per_matrix"  # Z_0 scale per matrix (authors' fix), or "original"
  conv_kernel_size: int = 35     # the authors' LRA setting; 0 = no convolution skip

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    check_settings(self.num_landmarks, self.pinv_iterations, self.pinv_init,
                   self.conv_kernel_size)
    conv_kernel = None
    if self.conv_kernel_size:
      conv_kernel = self.param("conv", conv_init, (self.conv_kernel_size, q.shape[2]))
    return nystrom_attention(q, k, v, conv_kernel, q_mask=q_mask, kv_mask=kv_mask,
                             num_landmarks=self.num_landmarks,
                             pinv_iterations=self.pinv_iterations, pinv_init=self.pinv_init)
