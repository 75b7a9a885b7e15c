"""Skyformer: exact Kernelized Attention when every row of [Q; K] is a landmark (gamma = 0),
landmarks sampled among real tokens only (half queries, half keys), padding invisible, more
landmarks approximate better, and clear build-time errors."""
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.skyformer import sample_landmarks, skyformer_attention

HEADS, DIM = 2, 8
sample = jax.jit(sample_landmarks, static_argnums=(3, 4, 5, 6))


def qkv(seed, length=16, batch=2):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((batch, length, HEADS, DIM)).astype(np.float32) for _ in range(3)]


def kernelized_attention(q, k, v):
  """Dense eq. 1: exp(-|q_i - k_j|^2 / (2 sqrt(p))) V, no row normalisation."""
  distance = np.sum((q[:, :, None] - k[:, None]) ** 2, axis=-1)          # [b, i, j, h]
  return np.einsum("bijh,bjhd->bihd", np.exp(-distance / (2 * np.sqrt(DIM))), v)


def test_all_rows_of_q_and_k_as_landmarks_is_exact_kernelized_attention():
  q, k, v = qkv(0)
  exact = kernelized_attention(q, k, v)
  every_row = np.arange(32)[None, :]
  error = lambda it, gamma: float(np.abs(skyformer_attention(
      q, k, v, every_row, gamma=gamma, pinv_iterations=it) - exact).max())
  limit = error(12, 0.0)   # measured 2.9e-6, |exact| <= 2.9
  assert limit < 1e-5 * np.abs(exact).max(), limit
  assert error(12, 0.1) > 1000 * limit    # the regulariser is what keeps it from exact (0.03)
  assert error(2, 0.0) > 1000 * limit     # and the iteration is what gets there


def test_landmarks_are_real_tokens_half_queries_half_keys():
  q_mask = np.array([[1] * 6 + [0] * 10, [0, 1] * 8], bool)     # a prefix, and every other token
  kv_mask = np.array([[1] * 3 + [0] * 13, [1] * 16], bool)
  index = np.asarray(sample(jax.random.key(0), q_mask, kv_mask, 2, 16, 16, 400))
  queries, keys = index[:, :200], index[:, 200:] - 16
  assert queries.min() >= 0 and keys.min() >= 0
  for b in range(2):
    assert set(queries[b]) == set(np.flatnonzero(q_mask[b]))     # every real query, no pad
    assert set(keys[b]) == set(np.flatnonzero(kv_mask[b]))


def test_padded_input_equals_the_input_cut_to_its_real_tokens():
  q, k, v = qkv(1, batch=1)
  mask = np.arange(16)[None, :] < 10
  key = jax.random.key(3)
  noisy = [np.where(mask[..., None, None], t, 1e3) for t in (q, k, v)]
  out = skyformer_attention(*noisy, sample(key, mask, mask, 1, 16, 16, 8), q_mask=mask,
                            kv_mask=mask)
  cut = skyformer_attention(q[:, :10], k[:, :10], v[:, :10],
                            sample(key, None, None, 1, 10, 10, 8))
  np.testing.assert_allclose(out[:, :10], cut, atol=1e-5, rtol=1e-5)
  assert np.all(np.asarray(out[:, 10:]) == 0.0)


def test_more_landmarks_approximate_better():
  q, k, v = qkv(2, length=32, batch=4)
  exact = kernelized_attention(q, k, v)
  error = lambda m: np.mean([np.abs(skyformer_attention(
      q, k, v, sample(jax.random.key(s), None, None, 4, 32, 32, m)) - exact).mean()
                             for s in range(2)])
  assert error(64) < 0.5 * error(4), (error(64), error(4))


@pytest.mark.parametrize("kwargs,message", [
    ({"num_landmarks": 1}, "num_landmarks=1"),
    ({"pinv_iterations": 0}, "pinv_iterations=0"),
    ({"gamma": -1.0}, "gamma=-1.0"),
])
def test_bad_kwargs_name_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    registry.build_mixer("skyformer", kwargs)


def test_no_causal_form_and_no_cross():
  with pytest.raises(ValueError, match="no causal form"):
    registry.build_mixer("skyformer", {}, causal=True)
  with pytest.raises(ValueError, match="cross attention"):
    registry.build_mixer("skyformer", {}, cross=True)


def test_landmarks_beyond_the_rows_of_q_and_k_are_capped():
  """num_landmarks above lq + lk draws lq + lk (the :quick presets' 40 tokens against the
  paper's 128): the module then equals one built with exactly lq + lk landmarks."""
  q, k, v = qkv(3)
  outputs = []
  for m in (32, 1000):
    mixer = registry.build_mixer("skyformer", {"num_landmarks": m, "redraw": False})
    variables = mixer.init(jax.random.key(0), q, k, v)
    outputs.append(np.asarray(mixer.apply(variables, q, k, v)))
  np.testing.assert_array_equal(outputs[0], outputs[1])
