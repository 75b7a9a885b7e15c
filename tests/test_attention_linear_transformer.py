"""Linear Transformer: the chunked causal form equals the quadratic masked kernel attention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.linear_transformer import elu_feature_map, linear_transformer_attention


def qkv(seed, length=37, batch=2, heads=2, dim=8):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(key, (batch, length, heads, dim)) for key in keys]


def quadratic_kernel_attention(q, k, v, kv_mask, causal):
  """The [L, L] form of eq. 4 with phi = elu + 1, built here only as a reference."""
  weights = jnp.einsum("bihm,bjhm->bhij", elu_feature_map(q), elu_feature_map(k))
  allowed = kv_mask[:, None, None, :]
  if causal:
    allowed = allowed & jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))
  weights = jnp.where(allowed, weights, 0.0)
  weights = weights / weights.sum(-1, keepdims=True)
  return jnp.einsum("bhij,bjhd->bihd", weights, v)


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
def test_causal_chunked_equals_quadratic(chunk_size):
  q, k, v = qkv(0)
  mask = jnp.arange(37)[None, :] < jnp.array([[30], [37]])
  out = linear_transformer_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=True,
                                     chunk_size=chunk_size, eps=0.0)
  expected = quadratic_kernel_attention(q, k, v, mask, causal=True)
  expected = jnp.where(mask[:, :, None, None], expected, 0.0)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_bidirectional_equals_quadratic_and_cross_lengths():
  q = qkv(1, length=9)[0]
  _, k, v = qkv(2, length=23)
  kv_mask = jnp.arange(23)[None, :] < jnp.array([[17], [23]])
  out = linear_transformer_attention(q, k, v, kv_mask=kv_mask, eps=0.0)
  np.testing.assert_allclose(out, quadratic_kernel_attention(q, k, v, kv_mask, False),
                             atol=1e-5, rtol=1e-5)


def test_causal_needs_equal_lengths():
  q = qkv(1, length=9)[0]
  _, k, v = qkv(2, length=23)
  with pytest.raises(ValueError, match="as many queries as keys"):
    linear_transformer_attention(q, k, v, causal=True)


def test_module_uses_chunk_size_and_rejects_bad_one():
  q, k, v = qkv(3, length=16)
  outs = []
  for chunk in (4, 16):
    mixer = registry.build_mixer("linear_transformer", {"chunk_size": chunk}, causal=True)
    outs.append(mixer.apply({}, q, k, v))
  np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=1e-5)
  with pytest.raises(ValueError, match="chunk_size=0"):
    registry.build_mixer("linear_transformer", {"chunk_size": 0}).apply({}, q, k, v)
