"""Performer (FAVOR+): exact causal prefix sums, convergence to softmax, feature redraw.

Inputs are numpy and computations are jitted whole (op-by-op compiling dominates on CPU).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.performer import (RELU_KERNEL_EPS, haar_orthogonal, performer_attention,
                                        random_features, softmax_log_features)
from models.attention.transformer import softmax_attention

LENGTH, HEADS, DIM = 37, 2, 8
favor = jax.jit(performer_attention, static_argnames=("causal", "kernel", "chunk_size"))
draw = jax.jit(random_features, static_argnums=(1, 2), static_argnames=("scaling",))
exact_attention = jax.jit(softmax_attention)


def qkv(seed, length=LENGTH, batch=2, scale=1.0):
  rng = np.random.default_rng(seed)
  return [scale * rng.standard_normal((batch, length, HEADS, DIM), np.float32) for _ in range(3)]


@functools.partial(jax.jit, static_argnames="kernel")
def quadratic_reference(q, k, v, projection, kv_mask, kernel):
  """The [L, L] causal kernel matrix phi(q_i)^T phi(k_j), j <= i, built in the test only."""
  if kernel == "softmax":
    ratio = projection.shape[0] ** -0.5
    log_q = softmax_log_features(q, projection)
    phi_q = ratio * (jnp.exp(log_q - log_q.max(-1, keepdims=True)) + 1e-6)
    phi_k = ratio * jnp.exp(softmax_log_features(k, projection))   # no stabiliser needed here
  else:
    phi_q = jax.nn.relu(jnp.einsum("blhd,md->blhm", q, projection)) + RELU_KERNEL_EPS
    phi_k = jax.nn.relu(jnp.einsum("blhd,md->blhm", k, projection)) + RELU_KERNEL_EPS
  weights = jnp.einsum("bihm,bjhm->bhij", phi_q, phi_k)
  allowed = kv_mask[:, None, None, :] & jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
  weights = jnp.where(allowed, weights, 0.0)
  out = jnp.einsum("bhij,bjhd->bihd", weights / weights.sum(-1, keepdims=True), v)
  return jnp.where(kv_mask[:, :, None, None], out, 0.0)


def causal_favor(q, k, v, projection, mask, kernel):
  return favor(q, k, v, projection, q_mask=mask, kv_mask=mask, causal=True, kernel=kernel,
               chunk_size=8)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_causal_prefix_sum_equals_quadratic(kernel):
  q, k, v = qkv(0)
  projection = draw(jax.random.key(1), 32, DIM)
  mask = np.arange(LENGTH)[None, :] < np.array([[29], [LENGTH]])   # 37 = 4 chunks of 8 + 5
  np.testing.assert_allclose(causal_favor(q, k, v, projection, mask, kernel),
                             quadratic_reference(q, k, v, projection, mask, kernel=kernel),
                             atol=1e-5, rtol=1e-5)


def test_causal_is_stable_for_large_keys():
  # Keys whose unnormalised features overflow float32: the running-max scaling still works.
  q, k, v = qkv(2)
  k[:, 20:] *= 40.0
  out = causal_favor(q, k, v, draw(jax.random.key(3), 32, DIM), np.ones((2, LENGTH), bool),
                     "softmax")
  assert np.all(np.isfinite(np.asarray(out)))


def test_error_falls_as_features_grow():
  counts, errors = (16, 256, 4096), np.zeros(3)
  for seed in range(4):
    q, k, v = qkv(10 + seed, length=32, scale=0.5)   # small-norm q, k (Lemma 2 regime)
    exact = np.asarray(exact_attention(q, k, v))
    # The first m rows of a block-orthogonal draw are a block-orthogonal draw of m rows.
    projection = np.asarray(draw(jax.random.key(100 + seed), max(counts), DIM))
    for i, m in enumerate(counts):
      errors[i] += np.mean(np.abs(np.asarray(favor(q, k, v, projection[:m])) - exact)) / 4
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.15 * errors[0], errors   # ~1/sqrt(m): an unbiased estimator


def test_random_features_are_block_orthogonal_with_chosen_norms():
  w = np.asarray(draw(jax.random.key(0), 20, DIM, scaling="sqrt_d"))
  np.testing.assert_allclose(np.linalg.norm(w, axis=1), np.sqrt(DIM), rtol=1e-5)
  block = w[:DIM] / np.sqrt(DIM)
  np.testing.assert_allclose(block @ block.T, np.eye(DIM), atol=1e-5)
  chi = np.linalg.norm(np.asarray(draw(jax.random.key(0), 20, DIM)), axis=1)
  assert np.std(chi) > 0.1   # chi-distributed norms vary
  with pytest.raises(ValueError, match="scaling='unit'"):
    random_features(jax.random.key(0), 4, DIM, scaling="unit")


def test_orthogonal_blocks_are_the_positive_diagonal_qr_factor():
  # Gram-Schmidt's Q equals LAPACK's Householder Q with column signs fixed so diag(R) > 0,
  # the Haar-distributed factor; raw Householder Q has a fixed sign convention instead.
  gaussian = np.random.default_rng(3).standard_normal((3, DIM, DIM)).astype(np.float32)
  q = np.asarray(jax.jit(haar_orthogonal)(gaussian))
  householder_q, r = np.linalg.qr(gaussian)
  signs = np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
  np.testing.assert_allclose(q, householder_q * signs, atol=1e-5)
  np.testing.assert_allclose(np.swapaxes(q, 1, 2) @ q, np.broadcast_to(np.eye(DIM), q.shape),
                             atol=1e-5)


def runner(kwargs, deterministic):
  mixer = registry.build_mixer("performer", kwargs)
  q, k, v = qkv(5, length=16)
  return jax.jit(lambda seed: mixer.apply({}, q, k, v, deterministic=deterministic,
                                          rngs={"dropout": jax.random.key(seed)}))


def test_redraw_draws_new_features_in_training_only():
  train = runner({}, deterministic=False)
  assert float(np.abs(train(1) - train(2)).max()) > 1e-4
  # Evaluation ignores the rng and uses the same fixed features as redraw=False in training.
  np.testing.assert_array_equal(runner({}, True)(1), runner({"redraw": False}, False)(2))


def test_bad_kernel_is_an_error():
  q, k, v = qkv(5, length=16)
  mixer = registry.build_mixer("performer", {"kernel": "cos"})
  with pytest.raises(ValueError, match="kernel='cos'"):
    jax.eval_shape(mixer.apply, {}, q, k, v)


@functools.partial(jax.jit, static_argnames=("streamed", "chunk_size"))
def favor_value_and_grads(q, k, v, projection, mask, cotangent, streamed, chunk_size):
  """Outputs and d/d(q, k, v, projection) of <out, cotangent>, streamed or materialised."""
  def loss(q, k, v, projection):
    out = performer_attention(q, k, v, projection, q_mask=mask, kv_mask=mask,
                              chunk_size=chunk_size, streamed=streamed)
    return jnp.sum(out * cotangent), out
  grads, out = jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True)(q, k, v, projection)
  return out, grads


@pytest.mark.parametrize("chunk_size", [8, 64])
def test_streamed_favor_equals_materialised_values_and_gradients(chunk_size):
  # 37 = 4 chunks of 8 + 5 padded positions; the second row has padding. Keys in later chunks
  # are scaled up, so the running max of the key features grows from chunk to chunk and the
  # online rescaling of the accumulated state is exercised.
  q, k, v = qkv(20)
  k[:, 16:] *= 3.0
  projection = draw(jax.random.key(21), 32, DIM)
  mask = np.arange(LENGTH)[None, :] < np.array([[LENGTH], [23]])
  cotangent = np.random.default_rng(22).standard_normal(q.shape).astype(np.float32)
  out, grads = favor_value_and_grads(q, k, v, projection, mask, cotangent, True, chunk_size)
  ref_out, ref_grads = favor_value_and_grads(q, k, v, projection, mask, cotangent, False, 128)
  np.testing.assert_allclose(out, ref_out, atol=2e-6, rtol=1e-5)
  for name, grad, ref in zip("qkvW", grads, ref_grads):
    scale = float(np.abs(ref).max())
    assert scale > 0, name
    np.testing.assert_allclose(grad, ref, atol=1e-5 * scale, rtol=1e-4, err_msg=name)
  # Padded keys and values get no gradient; padded queries none either.
  for grad in grads[:3]:
    assert float(np.abs(np.asarray(grad)[1, 23:]).max()) == 0.0


def test_streamed_favor_without_real_keys_is_zero_and_finite():
  q, k, v = qkv(23)
  projection = draw(jax.random.key(24), 32, DIM)
  mask = np.stack([np.ones(LENGTH, bool), np.zeros(LENGTH, bool)])
  out, grads = favor_value_and_grads(q, k, v, projection, mask, np.ones_like(q), True, 8)
  assert float(np.abs(np.asarray(out)[1]).max()) == 0.0
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_bfloat16_inputs_are_computed_in_float32(kernel, causal):
  # Features and their prefix / total sums are float32 inside: bfloat16 inputs give the
  # float32 result on the rounded inputs, rounded once to bfloat16 (the input dtype).
  q, k, v = (jnp.asarray(t, jnp.bfloat16) for t in qkv(4))
  projection = draw(jax.random.key(1), 32, DIM)
  mask = np.arange(LENGTH)[None, :] < np.array([[29], [LENGTH]])
  run = lambda *t: favor(*t, projection, q_mask=mask, kv_mask=mask, causal=causal,
                         kernel=kernel, chunk_size=8)
  out = run(q, k, v)
  assert out.dtype == jnp.bfloat16
  expected = run(*(t.astype(jnp.float32) for t in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), expected, atol=2e-2, rtol=1e-2)


def causal_softmax_inline(q, k, v):
  """Exact causal softmax attention, written here (not the code under test)."""
  logits = np.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(np.tril(np.ones(logits.shape[-2:], bool)), logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  return np.einsum("bhij,bjhd->bihd", weights / weights.sum(-1, keepdims=True), v)


def test_causal_favor_converges_to_causal_softmax():
  # The causal form's own features (not shared with a reference built from the same code):
  # with many orthogonal features it must estimate exp(q.k / sqrt(d)) over the prefix.
  counts, errors = (16, 4096), np.zeros(2)
  mask = np.ones((2, 32), bool)
  for seed in range(3):
    q, k, v = qkv(20 + seed, length=32, scale=0.5)
    exact = causal_softmax_inline(q, k, v)
    projection = np.asarray(draw(jax.random.key(200 + seed), max(counts), DIM))
    for i, m in enumerate(counts):
      out = np.asarray(causal_favor(q, k, v, projection[:m], mask, "softmax"))
      errors[i] += np.mean(np.abs(out - exact)) / 3
  # Measured: mean abs error 0.033 with 16 features, 0.0028 with 4096 (about m^-1/2).
  assert errors[1] < 0.01 and errors[1] < 0.15 * errors[0], errors


# Incremental decoding (decode="state"): the prefix sums over the random features as an RNN.
from tests import state_decoding  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_decoding_step_by_step_equals_the_causal_forward_with_a_constant_state(kernel):
  mixer = registry.build_mixer("performer", {"num_features": 16, "kernel": kernel,
                                             "chunk_size": 5}, causal=True)
  q, k, v = state_decoding.qkv(0, 13, heads=4, kv_heads=2)
  k = 3.0 * k   # keys of different sizes: the running key scale changes along the way
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  shapes = state_decoding.cache_shapes(cache)
  expected = {"index": ((), "int32"), "state": ((2, 2, 16, 8), "float32"),
              "normaliser": ((2, 2, 16), "float32"), "projection": ((16, 8), "float32")}
  if kernel == "softmax":
    expected["key_scale"] = ((2, 2), "float32")
  assert shapes == expected
  longer = mixer.init(jax.random.key(0), *state_decoding.qkv(1, 29, heads=4, kv_heads=2),
                      decode=True)["cache"]
  assert state_decoding.cache_shapes(longer) == shapes


def test_decoding_uses_the_features_of_the_deterministic_forward():
  """The cache's projection is the layer's evaluation draw, not a training redraw."""
  mixer = registry.build_mixer("performer", {"num_features": 16}, causal=True)
  q, k, v = state_decoding.qkv(3, 6)
  full, stepped, _ = state_decoding.mixer_decode(mixer, q, k, v)
  out_train = mixer.apply({}, q, k, v, deterministic=False, rngs={"dropout": jax.random.key(9)})
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert not np.allclose(stepped[:, 1:], out_train[:, 1:], atol=1e-3)   # t = 0 reads v_0 only


def test_decoding_through_the_base_with_rope_and_grouped_heads():
  full, stepped, _ = state_decoding.attention_decode("performer", {"num_features": 16}, 11)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)


def test_decoding_in_bfloat16_keeps_the_dtype_and_a_float32_state():
  mixer = registry.build_mixer("performer", {"num_features": 16}, causal=True)
  q, k, v = (x.astype(jnp.bfloat16) for x in state_decoding.qkv(2, 9))
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v)
  assert stepped.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(stepped)))
  assert cache["state"].dtype == jnp.float32
  np.testing.assert_allclose(np.float32(stepped), np.float32(full), atol=5e-2, rtol=5e-2)
