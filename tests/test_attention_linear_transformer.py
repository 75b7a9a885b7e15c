"""Linear Transformer: the chunked causal form equals the quadratic masked kernel attention.

Inputs are numpy and every computation is jitted whole: on CPU, compiling op by op (eager
mode) costs far more than the arithmetic at these sizes.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.linear_transformer import linear_transformer_attention


def qkv(seed, length=37, batch=2, heads=2, dim=8):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((batch, length, heads, dim), np.float32) for _ in range(3)]


def lengths_mask(valid, length):
  return np.arange(length)[None, :] < np.array(valid)[:, None]


def phi(x):
  """Katharopoulos et al. 2020, eq. 7: elu(x) + 1, written out here (not imported from the
  code under test): x + 1 for x > 0, exp(x) for x <= 0."""
  return jnp.where(x > 0, x + 1.0, jnp.exp(jnp.minimum(x, 0.0)))


@functools.partial(jax.jit, static_argnames="causal")
def quadratic_kernel_attention(q, k, v, kv_mask, causal):
  """The [L, L] form of eq. 4 with phi = elu + 1, built here only as a reference."""
  weights = jnp.einsum("bihm,bjhm->bhij", phi(q), phi(k))
  allowed = kv_mask[:, None, None, :]
  if causal:
    allowed = allowed & jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
  weights = jnp.where(allowed, weights, 0.0)
  weights = weights / weights.sum(-1, keepdims=True)
  return jnp.einsum("bhij,bjhd->bihd", weights, v)


linear = jax.jit(linear_transformer_attention, static_argnames=("causal", "eps", "chunk_size"))


@pytest.mark.parametrize("chunk_size", [5, 64])   # 5 does not divide 37; 64 exceeds it
def test_causal_chunked_equals_quadratic(chunk_size):
  q, k, v = qkv(0)
  mask = lengths_mask([30, 37], 37)
  out = linear(q, k, v, q_mask=mask, kv_mask=mask, causal=True, chunk_size=chunk_size, eps=0.0)
  expected = np.where(mask[:, :, None, None], quadratic_kernel_attention(q, k, v, mask, True), 0)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_bidirectional_equals_quadratic_and_cross_lengths():
  q = qkv(1, length=9)[0]
  _, k, v = qkv(2, length=23)
  kv_mask = lengths_mask([17, 23], 23)
  out = linear(q, k, v, kv_mask=kv_mask, eps=0.0)
  np.testing.assert_allclose(out, quadratic_kernel_attention(q, k, v, kv_mask, False),
                             atol=1e-5, rtol=1e-5)


def test_causal_needs_equal_lengths():
  q = qkv(1, length=9)[0]
  _, k, v = qkv(2, length=23)
  with pytest.raises(ValueError, match="as many queries as keys"):
    jax.eval_shape(functools.partial(linear_transformer_attention, causal=True), q, k, v)


def test_bad_chunk_size_is_an_error():
  q, k, v = qkv(3, length=16)
  mixer = registry.build_mixer("linear_transformer", {"chunk_size": 0})
  with pytest.raises(ValueError, match="chunk_size=0"):
    jax.eval_shape(mixer.apply, {}, q, k, v)


# Incremental decoding (decode="state"): the RNN of eqs. 18-20, one token at a time.
from tests import state_decoding  # noqa: E402  pylint: disable=wrong-import-position


def test_decoding_step_by_step_equals_the_causal_forward_with_a_constant_state():
  mixer = registry.build_mixer("linear_transformer", {"chunk_size": 5}, causal=True)
  q, k, v = state_decoding.qkv(0, 13, heads=4, kv_heads=2)   # grouped heads: 2 queries per k/v
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  # S [b, kv_heads, d, d], z [b, kv_heads, d] in float32, whatever the length
  shapes = state_decoding.cache_shapes(cache)
  assert shapes == {"index": ((), "int32"), "state": ((2, 2, 8, 8), "float32"),
                    "normaliser": ((2, 2, 8), "float32")}
  longer = mixer.init(jax.random.key(0), *state_decoding.qkv(1, 29, heads=4, kv_heads=2),
                      decode=True)["cache"]
  assert state_decoding.cache_shapes(longer) == shapes
  assert int(cache["index"]) == 13


def test_decoding_through_the_base_with_rope_and_grouped_heads():
  full, stepped, cache = state_decoding.attention_decode("linear_transformer", {}, 11)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["mixer"]["state"].shape == (2, 2, 4, 4)   # 2 k/v heads of 16 / 4 features


def test_decoding_in_bfloat16_keeps_the_dtype_and_a_float32_state():
  mixer = registry.build_mixer("linear_transformer", {}, causal=True)
  q, k, v = (x.astype(jnp.bfloat16) for x in state_decoding.qkv(2, 9))
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v)
  assert stepped.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(stepped)))
  assert cache["state"].dtype == jnp.float32
  np.testing.assert_allclose(np.float32(stepped), np.float32(full), atol=5e-2, rtol=5e-2)
