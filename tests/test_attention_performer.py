"""Performer (FAVOR+): exact causal prefix sums, convergence to softmax, feature redraw."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.performer import (RELU_KERNEL_EPS, performer_attention, random_features,
                                        softmax_log_features)
from models.attention.transformer import softmax_attention

LENGTH, HEADS, DIM = 37, 2, 8
# Jitted once per shape: eager dispatch of many small ops is what makes CPU tests slow.
favor = jax.jit(performer_attention, static_argnames=("causal", "kernel", "chunk_size"))
draw = jax.jit(random_features, static_argnums=(1, 2))


def qkv(seed, length=LENGTH, batch=2, scale=1.0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [scale * jax.random.normal(key, (batch, length, HEADS, DIM)) for key in keys]


def quadratic_reference(q, k, v, projection, kv_mask, kernel, stabilizer=1e-6):
  """The [L, L] causal kernel matrix phi(q_i)^T phi(k_j), j <= i, built in the test only."""
  if kernel == "softmax":
    ratio = projection.shape[0] ** -0.5
    log_q = softmax_log_features(q, projection)
    phi_q = ratio * (jnp.exp(log_q - log_q.max(-1, keepdims=True)) + stabilizer)
    phi_k = ratio * jnp.exp(softmax_log_features(k, projection))   # no stabiliser needed here
  else:
    phi_q = jax.nn.relu(jnp.einsum("blhd,md->blhm", q, projection)) + RELU_KERNEL_EPS
    phi_k = jax.nn.relu(jnp.einsum("blhd,md->blhm", k, projection)) + RELU_KERNEL_EPS
  weights = jnp.einsum("bihm,bjhm->bhij", phi_q, phi_k)
  allowed = kv_mask[:, None, None, :] & jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
  weights = jnp.where(allowed, weights, 0.0)
  out = jnp.einsum("bhij,bjhd->bihd", weights / weights.sum(-1, keepdims=True), v)
  return jnp.where(kv_mask[:, :, None, None], out, 0.0)


@pytest.mark.parametrize("kernel,chunk_size", [("softmax", 8), ("softmax", 64), ("relu", 16)])
def test_causal_prefix_sum_equals_quadratic(kernel, chunk_size):
  q, k, v = qkv(0)
  projection = draw(jax.random.key(1), 32, DIM)
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[29], [LENGTH]])
  out = favor(q, k, v, projection, q_mask=mask, kv_mask=mask, causal=True, kernel=kernel,
              chunk_size=chunk_size)
  expected = jax.jit(quadratic_reference, static_argnums=5)(q, k, v, projection, mask, kernel)
  np.testing.assert_allclose(out, expected,
                             atol=1e-5, rtol=1e-5)


def test_causal_is_stable_for_large_keys():
  # Keys whose unnormalised features overflow float32: the running-max scaling still works.
  q, k, v = qkv(2, scale=1.0)
  k = k.at[:, 20:].multiply(40.0)
  out = favor(q, k, v, draw(jax.random.key(3), 32, DIM), causal=True, chunk_size=8)
  assert bool(jnp.all(jnp.isfinite(out)))


def test_error_falls_as_features_grow():
  counts, errors = (16, 256, 4096), np.zeros(3)
  for seed in range(4):
    q, k, v = qkv(10 + seed, length=32, scale=0.5)   # small-norm q, k (Lemma 2 regime)
    exact = jax.jit(softmax_attention)(q, k, v)
    # The first m rows of a block-orthogonal draw are a block-orthogonal draw of m rows.
    projection = draw(jax.random.key(100 + seed), max(counts), DIM)
    for i, m in enumerate(counts):
      errors[i] += float(jnp.mean(jnp.abs(favor(q, k, v, projection[:m]) - exact))) / 4
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.15 * errors[0], errors   # ~1/sqrt(m): an unbiased estimator


def test_random_features_are_block_orthogonal_with_chosen_norms():
  w = random_features(jax.random.key(0), 20, DIM, scaling="sqrt_d")
  np.testing.assert_allclose(jnp.linalg.norm(w, axis=1), np.sqrt(DIM), rtol=1e-5)
  block = w[:DIM] / np.sqrt(DIM)
  np.testing.assert_allclose(block @ block.T, np.eye(DIM), atol=1e-5)
  chi = jnp.linalg.norm(random_features(jax.random.key(0), 20, DIM), axis=1)
  assert float(jnp.std(chi)) > 0.1   # chi-distributed norms vary
  with pytest.raises(ValueError, match="scaling='unit'"):
    random_features(jax.random.key(0), 4, DIM, scaling="unit")


def run(kwargs, deterministic, seed):
  q, k, v = qkv(5, length=16)
  mixer = registry.build_mixer("performer", kwargs)
  return mixer.apply({}, q, k, v, deterministic=deterministic,
                     rngs={"dropout": jax.random.key(seed)})


def test_redraw_draws_new_features_in_training_only():
  train_a, train_b = run({}, False, 1), run({}, False, 2)
  assert float(jnp.abs(train_a - train_b).max()) > 1e-4
  # Evaluation ignores the rng and uses the same fixed features as redraw=False in training.
  np.testing.assert_array_equal(run({}, True, 1), run({"redraw": False}, False, 2))


def test_bad_kernel_is_an_error():
  with pytest.raises(ValueError, match="kernel='cos'"):
    run({"kernel": "cos"}, True, 0)
