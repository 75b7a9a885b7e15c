"""Nyströmformer: exact in the m = L limit, eq. 16 converges to pinv, more landmarks approximate
better, masked landmarks, the convolution skip, and errors naming the field.

Inputs are numpy; the pure function is jitted whole (op-by-op compiling dominates on CPU).
"""
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.nystromformer import (_conv_heads_major, iterative_pinv, nystrom_attention,
                                            segment_means, shifted_sum)
from models.attention.transformer import softmax_attention

HEADS, DIM = 2, 8
exact_attention = jax.jit(softmax_attention)


def qkv(seed, length=16, batch=2, kv_length=None):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, length, HEADS, DIM), np.float32)
  kv_shape = (batch, kv_length or length, HEADS, DIM)
  return q, rng.standard_normal(kv_shape, np.float32), rng.standard_normal(kv_shape, np.float32)


def padding_mask(valid, length=16):
  return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def conv_kernel(width=5, seed=9):
  return np.random.default_rng(seed).uniform(-0.5, 0.5, (width, HEADS)).astype(np.float32)


@pytest.mark.parametrize("num_landmarks", [16, 40])   # m = L, and m > L (capped at L)
def test_one_landmark_per_token_is_exact_softmax_attention(num_landmarks):
  q, k, v = qkv(0)
  mask = padding_mask([11, 16])
  out = nystrom_attention(q, k, v, q_mask=mask, kv_mask=mask, num_landmarks=num_landmarks,
                          pinv_iterations=30)
  # F = A = B = S, and S S^+ S = S; float32 reaches ~1e-5 on these inputs.
  np.testing.assert_allclose(out, exact_attention(q, k, v, q_mask=mask, kv_mask=mask),
                             atol=5e-5, rtol=0)


def test_cross_lengths_are_exact_in_the_limit_too():
  q, k, v = qkv(1, length=8, kv_length=12)
  out = nystrom_attention(q, k, v, num_landmarks=12, pinv_iterations=30)   # A is 8 x 12
  np.testing.assert_allclose(out, exact_attention(q, k, v), atol=5e-5, rtol=0)


@pytest.mark.parametrize("init", ["original", "per_matrix"])
def test_pinv_iteration_converges_to_numpy_pinv(init):
  rng = np.random.default_rng(2)
  logits = 2.0 * rng.standard_normal((3, 8, 8))
  a = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)   # softmax rows, as A of eq. 14
  pinv = jax.jit(iterative_pinv, static_argnums=(1, 2))
  expected = np.linalg.pinv(a)
  error = lambda it: np.abs(pinv(a.astype(np.float32), it, init) - expected).max()
  assert error(30) < 1e-4 * np.abs(expected).max()
  assert error(2) > 100 * error(30)   # it is the iteration that gets there


def test_default_pinv_init_keeps_examples_independent_of_their_batch():
  # Six iterations from Z_0 have not converged, so Z_0's scale shows in the output: per
  # matrix (default) an example's output is the same alone or in a batch; the authors'
  # first ("original") scale, a maximum over the batch, makes it depend on the batch.
  q, k, v = qkv(11, length=32, batch=2)
  k[1] *= 4.0   # a sharper second example changes the batch-wide maximum of column sums
  run = lambda init, n: np.asarray(nystrom_attention(q[:n], k[:n], v[:n], num_landmarks=8,
                                                     pinv_init=init))[0]
  np.testing.assert_allclose(run("per_matrix", 1), run("per_matrix", 2), atol=1e-6)
  assert np.abs(run("original", 1) - run("original", 2)).max() > 1e-4


def test_more_landmarks_approximate_better_on_smooth_input():
  # Tokens constant over blocks of 4 (plus noise): m = L/2 landmarks see every block,
  # m = L/8 average pairs of blocks together.
  length, rng = 64, np.random.default_rng(3)
  q, k, v = (np.repeat(rng.standard_normal((1, length // 4, HEADS, DIM)), 4, axis=1)
             + 0.05 * rng.standard_normal((1, length, HEADS, DIM)) for _ in range(3))
  q, k, v = (t.astype(np.float32) for t in (q, k, v))
  exact = exact_attention(q, k, v)
  error = lambda m: float(np.abs(nystrom_attention(q, k, v, num_landmarks=m,
                                                   pinv_iterations=20) - exact).mean())
  fine, coarse = error(length // 2), error(length // 8)
  assert fine < 0.1 * coarse, (fine, coarse)
  assert fine < 1e-2


def test_segment_means_ignore_padding_and_flag_empty_segments():
  x = np.random.default_rng(4).standard_normal((1, 10, HEADS, DIM)).astype(np.float32)
  x[0, 5:] = 1e6   # padding
  means, real = jax.jit(segment_means, static_argnums=2)(x, padding_mask([5], 10), 4)
  # 10 tokens, 4 landmarks: segments of 3 -> [0:3], [3:5] + padding, [6:9], [9:10] + 2 more
  np.testing.assert_allclose(means[0, 0], x[0, 0:3].mean(0), atol=1e-6)
  np.testing.assert_allclose(means[0, 1], x[0, 3:5].mean(0), atol=1e-6)   # a mean of 2
  assert real.tolist() == [[True, True, False, False]]
  assert np.all(means[0, 2:] == 0.0)


@pytest.mark.parametrize("use_conv", [False, True])
def test_padded_input_equals_the_input_cut_to_its_real_tokens(use_conv):
  # 16 positions, 10 real, m = 4 (segments of 4; the last one is all padding) behaves as the
  # 10 real tokens alone with m = 3 (segments of 4, padded up internally).
  q, k, v = qkv(5, batch=1)
  mask = padding_mask([10])
  kernel = conv_kernel() if use_conv else None
  noisy = [np.where(mask[..., None, None], t, 1e3) for t in (q, k, v)]
  out = nystrom_attention(*noisy, kernel, q_mask=mask, kv_mask=mask, num_landmarks=4)
  cut = nystrom_attention(q[:, :10], k[:, :10], v[:, :10], kernel, num_landmarks=3)
  np.testing.assert_allclose(out[:, :10], cut, atol=1e-5, rtol=1e-5)
  assert np.all(np.asarray(out[:, 10:]) == 0.0)


def test_conv_skip_changes_the_output_by_a_local_term():
  q, k, v = qkv(6)
  kernel = conv_kernel(width=3)
  plain = nystrom_attention(q, k, v, num_landmarks=4)
  with_conv = nystrom_attention(q, k, v, kernel, num_landmarks=4)
  skip = np.asarray(with_conv - plain)
  # Per head: out_i += sum_j w[j] v[i + j - 1] (zero beyond the ends), same for all channels.
  expected = np.zeros_like(v)
  for j in range(3):
    shifted = np.roll(v, 1 - j, axis=1)
    if j == 0:
      shifted[:, 0] = 0.0
    if j == 2:
      shifted[:, -1] = 0.0
    expected += kernel[j][None, None, :, None] * shifted
  np.testing.assert_allclose(skip, expected, atol=1e-5)
  assert np.abs(skip).max() > 0.1


@pytest.mark.parametrize("length,width", [(100, 35), (7, 5), (64, 3), (50, 65)])
def test_conv_backward_matches_autodiff_of_the_shifted_sum(length, width):
  # The hand-written backward (reversed-kernel correlation, blocked kernel gradient) against
  # autodiff of the plain tap-by-tap sum; widths wider than the input and than a 32-token block.
  rng = np.random.default_rng(length)
  v, grad = (rng.standard_normal((2, HEADS, length, 3), np.float32) for _ in range(2))
  kernel = rng.standard_normal((width, HEADS), np.float32)
  gradients = lambda conv: jax.jit(jax.grad(lambda v, w: (conv(v, w) * grad).sum(),
                                            argnums=(0, 1)))(v, kernel)
  for got, want in zip(gradients(_conv_heads_major), gradients(shifted_sum)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_module_creates_one_conv_kernel_per_head_and_none_when_off():
  q, k, v = qkv(7)
  for size, shapes in [(5, {"conv": (5, HEADS)}), (0, {})]:
    mixer = registry.build_mixer("nystromformer", {"num_landmarks": 4, "conv_kernel_size": size})
    variables = jax.eval_shape(mixer.init, jax.random.key(0), q, k, v)   # no compile
    assert {n: p.shape for n, p in variables.get("params", {}).items()} == shapes


@pytest.mark.parametrize("kwargs,message", [
    ({"num_landmarks": 0}, "num_landmarks=0"),
    ({"pinv_iterations": 0}, "pinv_iterations=0"),
    ({"pinv_init": "exact"}, "pinv_init='exact'"),
    ({"conv_kernel_size": 4}, "conv_kernel_size=4"),
    ({"conv_kernel_size": -3}, "conv_kernel_size=-3"),
])
def test_bad_kwargs_name_the_field(kwargs, message):
  q, k, v = qkv(8)
  mixer = registry.build_mixer("nystromformer", kwargs)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(mixer.init, jax.random.key(0), q, k, v)


def test_no_causal_form_and_no_cross_module():
  with pytest.raises(ValueError, match="no causal form"):
    registry.build_mixer("nystromformer", {}, causal=True)
  with pytest.raises(ValueError, match="cross attention"):
    registry.build_mixer("nystromformer", {}, cross=True)
