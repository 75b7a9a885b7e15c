"""Performer, FAVOR+ (Choromanski et al. 2021, "Rethinking Attention with Performers").

Softmax attention exp(q^T k / sqrt(d)) is approximated by phi(q)^T phi(k) with positive random
features (Lemma 1, eq. for phi+): with x = q / d^(1/4),

  phi(x) = m^(-1/2) [exp(w_1^T x - |x|^2 / 2), ..., exp(w_m^T x - |x|^2 / 2)],

w_i Gaussian rows made block-orthogonal (sec. 2.4, ORF: QR of d x d Gaussian blocks) with
row norms redrawn from the chi distribution (`scaling="chi"`) or fixed to sqrt(d)
(`scaling="sqrt_d"`). `kernel="relu"` is the generalised kernel phi(x) = relu(W x) + 1e-3
(sec. 2.3, "Performer-ReLU"). Attention is then linear (eq. 3 / `feature_maps`): bidirectional
as phi(Q)(phi(K)^T V), causal by chunked prefix sums.

Numerical stabiliser (as the authors' code): each query's features are divided by their own
max, keys' by the max over the (real) keys, and `numerical_stabilizer` is added. Both factors
cancel in the normalisation. In the causal form a max over *all* keys would let outputs depend
on future keys through the added constant, so there keys get no added constant, carry their own
scale, and the running max over past keys is factored out exactly
(`feature_maps.causal_linear_attention`). Random rows are the positive-diagonal QR factors
(Haar); raw Householder QR's sign convention would bias the estimator.

Defaults are the authors' FAVOR+ ones (m = 256, orthogonal, chi norms, redraw). The LRA
repository's Performer default was instead the ReLU kernel without a random projection
(`make_fast_generalized_attention`, features_type="deterministic"); `kernel="relu"` here keeps
the random projection of the paper's Performer-ReLU.

Incremental decoding (decode="state"): the causal prefix sums carried one token at a time
(`feature_maps.LinearState`, with the running key scale of the softmax kernel), over the
deterministic features of the layer (drawn once into the cache): float32 `[b, kv_heads, m, d]`
+ `[b, kv_heads, m]` (+ `[b, kv_heads]` scale, + the `[m, d]` projection), whatever the length.
"""
from __future__ import annotations

import functools
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, favor_streamed, feature_maps, masks
from models.attention.registry import register

KERNELS = ("softmax", "relu")
SCALINGS = ("chi", "sqrt_d")
RELU_KERNEL_EPS = 1e-3  # the authors' kernel_epsilon for generalised (ReLU) attention


def haar_orthogonal(gaussian):
  """Q of gaussian = Q R with R's diagonal positive, for `[..., n, n]` Gaussian blocks.

  That Q is Haar-distributed (raw Householder QR is not: its sign convention biases the
  directions, e.g. column 1 always has a negative first entry, which biases the estimator).
  Computed by classical Gram-Schmidt applied twice per column (CGS2), which produces exactly
  the positive-diagonal factor, in plain XLA ops: inside the CPU train step the LAPACK QR
  custom call took 25-45 ms (profiled; 0.3 ms when run on its own).
  """
  n = gaussian.shape[-1]

  def next_column(j, q):
    column = jax.lax.dynamic_slice_in_dim(gaussian, j, 1, axis=-1)          # [..., n, 1]
    for _ in range(2):   # the second pass restores orthogonality lost to rounding
      column = column - q @ (jnp.swapaxes(q, -1, -2) @ column)
    column = column / jnp.linalg.norm(column, axis=-2, keepdims=True)
    return jax.lax.dynamic_update_slice_in_dim(q, column, j, axis=-1)

  return jax.lax.fori_loop(0, n, next_column, jnp.zeros_like(gaussian))


@functools.partial(jax.jit, static_argnums=(1, 2), static_argnames=("orthogonal", "scaling"))
def random_features(key, num_features: int, dim: int, *, orthogonal=True, scaling="chi"):
  """`[num_features, dim]` projection W (sec. 2.4): block-orthogonal Gaussian rows."""
  if scaling not in SCALINGS:
    raise ValueError(f"performer scaling={scaling!r}; expected one of {SCALINGS}")
  if not orthogonal:
    return jax.random.normal(key, (num_features, dim))
  num_blocks = -(-num_features // dim)
  # One draw for both the blocks and the chi norms (one PRNG expansion compiles faster).
  gaussian = jax.random.normal(key, (num_blocks * dim + num_features, dim))
  q_factor = haar_orthogonal(gaussian[:num_blocks * dim].reshape(num_blocks, dim, dim))
  rows = q_factor.transpose(0, 2, 1).reshape(num_blocks * dim, dim)[:num_features]
  if scaling == "chi":   # norms of independent Gaussian vectors, so marginals stay Gaussian
    norms = jnp.linalg.norm(gaussian[num_blocks * dim:], axis=1)
  else:
    norms = jnp.full((num_features,), jnp.sqrt(float(dim)))
  return rows * norms[:, None]


def softmax_log_features(x, projection):
  """log of the unnormalised phi+ features: w^T x' - |x'|^2 / 2 with x' = x / d^(1/4)."""
  x = x / jnp.sqrt(jnp.sqrt(float(x.shape[-1])))
  return (jnp.einsum("blhd,md->blhm", x, projection)
          - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True))


# Jitted as a whole: one compile instead of one per op when called eagerly (tests, benchmarks).
@functools.partial(jax.jit, static_argnames=("causal", "kernel", "numerical_stabilizer",
                                              "chunk_size", "streamed"))
def performer_attention(q, k, v, projection, *, q_mask=None, kv_mask=None, causal=False,
                        kernel="softmax", numerical_stabilizer=1e-6, chunk_size=128,
                        streamed=True):
  """Pure function. q: `[b, lq, h, d]`, k/v: `[b, lk, h, d]`, projection `[m, d]`.

  The bidirectional softmax kernel runs streamed (`favor_streamed`: features one chunk of
  `chunk_size` at a time, hand-written backward) unless `streamed=False`, which materialises
  the `[b, L, h, m]` features and lets autodiff differentiate them (the reference in tests).
  """
  if kernel not in KERNELS:
    raise ValueError(f"performer kernel={kernel!r}; expected one of {KERNELS}")
  out_dtype = v.dtype
  # float32 inside, whatever the model's dtype (bfloat16): exp features and their sums over
  # the length lose too much in bfloat16. The output goes back to the input dtype.
  q, k, v, projection = (t.astype(jnp.float32) for t in (q, k, v, projection))
  if q_mask is not None:
    q = jnp.where(q_mask[:, :, None, None], q, 0.0)
  kv_mask = jnp.ones(k.shape[:2], bool) if kv_mask is None else kv_mask
  kv_keep = kv_mask[:, :, None, None]
  k, v = jnp.where(kv_keep, k, 0.0), jnp.where(kv_keep, v, 0.0)
  if kernel == "softmax" and not causal and streamed:
    out = favor_streamed.streamed_favor(q, k, v, projection, kv_mask, numerical_stabilizer,
                                        chunk_size)
    return masks.zero_padded_queries(out.astype(out_dtype), q_mask)
  phi_q, phi_k, key_log_scale = favor_features(q, k, projection, kv_keep, causal=causal,
                                               kernel=kernel,
                                               numerical_stabilizer=numerical_stabilizer)
  if causal:
    out = feature_maps.causal_linear_attention(phi_q, phi_k, v, eps=0.0, chunk_size=chunk_size,
                                               key_log_scale=key_log_scale)
  else:
    out = feature_maps.linear_attention(phi_q, phi_k, v, eps=0.0)
  return masks.zero_padded_queries(out.astype(out_dtype), q_mask)


def favor_features(q, k, projection, kv_keep, *, causal, kernel, numerical_stabilizer):
  """(phi_q, phi_k, key_log_scale) of float32 q, k `[b, l, h, d]`; kv_keep `[b, l, 1, 1]`.
  key_log_scale (`[b, l, h]`, causal softmax kernel only, else None): the keys' features are
  phi_k * exp(key_log_scale) (`feature_maps.causal_linear_attention`)."""
  ratio = 1.0 / jnp.sqrt(float(projection.shape[0]))
  key_log_scale = None
  if kernel == "relu":
    phi_q = jax.nn.relu(jnp.einsum("blhd,md->blhm", q, projection)) + RELU_KERNEL_EPS
    phi_k = jax.nn.relu(jnp.einsum("blhd,md->blhm", k, projection)) + RELU_KERNEL_EPS
  else:
    # Query stabiliser: the query's own max. Its |x'|^2 / 2 term cancels against that max, so
    # only w^T x' is kept (the same value; the max is a constant for the gradient).
    logits_q = jnp.einsum("blhd,md->blhm", q / jnp.sqrt(jnp.sqrt(float(q.shape[-1]))),
                          projection)
    q_max = jax.lax.stop_gradient(jnp.max(logits_q, axis=-1, keepdims=True))
    phi_q = ratio * (jnp.exp(logits_q - q_max) + numerical_stabilizer)
    log_k = jnp.where(kv_keep, softmax_log_features(k, projection), feature_maps.LOG_ZERO)
    if causal:   # per-key scale; the running max over past keys is factored out exactly
      key_log_scale = jax.lax.stop_gradient(jnp.max(log_k, axis=-1))   # [b, l, h]
      phi_k = ratio * jnp.exp(log_k - key_log_scale[..., None])
    else:        # one scale per (batch, head): the max over real keys and features
      k_max = jax.lax.stop_gradient(jnp.max(log_k, axis=(1, 3), keepdims=True))
      phi_k = ratio * (jnp.exp(log_k - k_max) + numerical_stabilizer)
  return phi_q, jnp.where(kv_keep, phi_k, 0.0), key_log_scale


@register("performer", causal=True, cross=True, decode="state")
class PerformerAttention(nn.Module):
  """FAVOR+ mixer. Features: redrawn every training call from the "dropout" rng when `redraw`,
  otherwise (and always when deterministic) fixed, from `seed` and this layer's path."""
  causal: bool = False
  num_features: int = 256          # m; the authors' and LRA's nb_features
  kernel: str = "softmax"          # "softmax" (FAVOR+) or "relu" (generalised attention)
  orthogonal: bool = True          # ORF (sec. 2.4); False gives iid Gaussian rows
  scaling: str = "chi"             # row norms: "chi" (ortho_scaling=0) or "sqrt_d" (=1)
  redraw: bool = True              # the authors' redraw_features default
  seed: int = 0
  numerical_stabilizer: float = 1e-6
  chunk_size: int = 128            # tokens per streamed chunk: speed and memory, not results

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if self.num_features < 1:
      raise ValueError(f"performer num_features={self.num_features}; expected >= 1")
    if self.chunk_size < 1:
      raise ValueError(f"performer chunk_size={self.chunk_size}; expected >= 1")
    if self.kernel not in KERNELS:
      raise ValueError(f"performer kernel={self.kernel!r}; expected one of {KERNELS}")
    if decode:
      return self._decode(q, k, v)
    projection = self._projection(q.shape[-1], deterministic)
    return performer_attention(q, k, v, jax.lax.stop_gradient(projection), q_mask=q_mask,
                               kv_mask=kv_mask, causal=self.causal, kernel=self.kernel,
                               numerical_stabilizer=self.numerical_stabilizer,
                               chunk_size=self.chunk_size)

  def _projection(self, dim, deterministic):
    if self.redraw and not deterministic:
      key = self.make_rng("dropout")
    else:   # param-free and deterministic; the layer path makes layers draw different features
      path = "/".join(str(part) for part in self.scope.path)
      key = jax.random.fold_in(jax.random.key(self.seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)
    return random_features(key, self.num_features, dim, orthogonal=self.orthogonal,
                           scaling=self.scaling)

  def _decode(self, q, k, v):
    """Incremental decoding (decoding.py): the causal prefix sums as a running state over the
    m random features (the prefix sums of unidirectional FAVOR+ as an RNN, Katharopoulos et al.
    2020, eqs. 18-20), with the evaluation features (the deterministic draw of this layer: those
    of the full forward with deterministic=True), drawn once into the cache. k/v have the
    base's key/value heads; the state holds those only: `[b, kv_heads, m, d]`, `[b, kv_heads,
    m]` and, softmax kernel, the running key scale `[b, kv_heads]`, all float32."""
    if not self.causal:
      raise ValueError("performer decode=True needs the causal form")
    stepping, _ = decoding.decode_index(self)
    b, _, kv_heads, dim = k.shape
    kernel_scaled = self.kernel == "softmax"
    state = feature_maps.LinearState(self, b, kv_heads, self.num_features, v.shape[-1],
                                     scaled=kernel_scaled)
    features = self.variable("cache", "projection",
                             lambda: self._projection(dim, deterministic=True))
    projection = jax.lax.stop_gradient(features.value)
    if not stepping:   # the cache-creating call: the causal full forward
      heads = q.shape[2]
      return performer_attention(q, decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads),
                                 projection, causal=True, kernel=self.kernel,
                                 numerical_stabilizer=self.numerical_stabilizer,
                                 chunk_size=self.chunk_size)
    decoding.check_one_token(q, "attention 'performer'")
    phi_q, phi_k, key_log_scale = favor_features(
        q.astype(jnp.float32), k.astype(jnp.float32), projection, True, causal=True,
        kernel=self.kernel, numerical_stabilizer=self.numerical_stabilizer)
    return state.step(phi_q, phi_k, v, eps=0.0, key_log_scale=key_log_scale)
