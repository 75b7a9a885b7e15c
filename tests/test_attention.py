"""Registry-wide attention tests: every registered variant, no exceptions.

Shapes, finiteness, padding invariance, bfloat16 inputs, causal no-leak (gradient), jit ==
no-jit, dropout off is deterministic, and sub-quadratic memory growth (XLA's compiled memory
analysis).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from tests.attention_cases import HEAD_DIM, HEADS, LENGTH, MEMORY_KWARGS, SMALL_KWARGS

NAMES = registry.names()
CAUSAL = [n for n in NAMES if registry.get(n).supports_causal]
CROSS = [n for n in NAMES if registry.get(n).supports_cross]
SUBQUADRATIC = [n for n in NAMES if registry.get(n).subquadratic]


def make_mixer(name, causal=False, cross=False, max_len=LENGTH, **extra):
  kwargs = dict(SMALL_KWARGS.get(name, {}), **extra)
  return registry.build_mixer(name, kwargs, causal=causal, cross=cross, max_len=max_len,
                              kv_max_len=max_len, dropout_rate=0.0)


def qkv(seed=0, batch=2, length=LENGTH):
  keys = jax.random.split(jax.random.key(seed), 3)
  shape = (batch, length, HEADS, HEAD_DIM)
  return [jax.random.normal(k, shape) for k in keys]


def init_apply(mixer, q, k, v, q_mask=None, kv_mask=None, seed=0):
  rngs = {"params": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}
  variables = mixer.init(rngs, q, k, v, q_mask=q_mask, kv_mask=kv_mask, inputs_q=None)
  apply = lambda q, k, v: mixer.apply(variables, q, k, v, q_mask=q_mask, kv_mask=kv_mask,
                                      deterministic=True, rngs={"dropout": jax.random.key(7)})
  return variables, apply


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_finite(name):
  q, k, v = qkv()
  mask = jnp.ones((2, LENGTH), bool)
  _, apply = init_apply(make_mixer(name), q, k, v, mask, mask)
  out = apply(q, k, v)
  assert out.shape == q.shape
  assert bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("name,causal", [(n, False) for n in NAMES] + [(n, True) for n in CAUSAL])
def test_padding_invariance(name, causal):
  q, k, v = qkv()
  valid = LENGTH - 5
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[valid], [LENGTH]])
  _, apply = init_apply(make_mixer(name, causal=causal), q, k, v, mask, mask)
  q2, k2, v2 = (jnp.where(mask[..., None, None], t, 100.0 * n)
                for t, n in zip((q, k, v), qkv(seed=5)))
  out, out2 = apply(q, k, v), apply(q2, k2, v2)
  np.testing.assert_allclose(out[0, :valid], out2[0, :valid], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out[1], out2[1], atol=1e-5, rtol=1e-5)
  assert bool(jnp.all(jnp.isfinite(out2)))


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_inputs_keep_their_dtype_and_finite_gradients(name):
  # A model built with dtype=bfloat16 hands its mixer bfloat16 q, k, v.
  q, k, v = (t.astype(jnp.bfloat16) for t in qkv(3))
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[LENGTH], [LENGTH - 5]])
  _, apply = init_apply(make_mixer(name), q, k, v, mask, mask)
  assert apply(q, k, v).dtype == jnp.bfloat16
  loss = lambda q, k, v: apply(q, k, v).astype(jnp.float32).sum()
  for grad in jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v):
    assert grad.dtype == jnp.bfloat16
    assert bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32))))


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_no_leak(name):
  q, k, v = qkv(batch=1)
  mask = jnp.ones((1, LENGTH), bool)
  _, apply = init_apply(make_mixer(name, causal=True), q, k, v, mask, mask)
  position = LENGTH // 2
  def out_at(q, k, v):
    return apply(q, k, v)[0, position].sum()
  grads = jax.grad(out_at, argnums=(0, 1, 2))(q, k, v)
  for which, g in zip("qkv", grads):
    future = np.abs(np.asarray(g[0, position + 1:])).max()
    assert future == 0.0, f"{name}: output {position} depends on future {which}"
  assert np.abs(np.asarray(grads[2][0, :position + 1])).max() > 0  # the past does matter


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_no_jit(name):
  q, k, v = qkv()
  mask = jnp.ones((2, LENGTH), bool)
  _, apply = init_apply(make_mixer(name), q, k, v, mask, mask)
  np.testing.assert_allclose(apply(q, k, v), jax.jit(apply)(q, k, v), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_dropout_off_is_deterministic(name):
  q, k, v = qkv()
  mask = jnp.ones((2, LENGTH), bool)
  mixer = registry.build_mixer(name, SMALL_KWARGS.get(name, {}), max_len=LENGTH,
                               kv_max_len=LENGTH, dropout_rate=0.5)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  variables = mixer.init(rngs, q, k, v, q_mask=mask, kv_mask=mask)
  run = lambda seed, det: mixer.apply(variables, q, k, v, q_mask=mask, kv_mask=mask,
                                      deterministic=det, rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(run(1, True), run(2, True))


@pytest.mark.parametrize("name", CROSS)
def test_cross_attention_shapes(name):
  q, = qkv(length=LENGTH)[:1]
  k, v = qkv(seed=3, length=2 * LENGTH)[:2]
  q_mask, kv_mask = jnp.ones((2, LENGTH), bool), jnp.ones((2, 2 * LENGTH), bool)
  mixer = registry.build_mixer(name, SMALL_KWARGS.get(name, {}), cross=True, max_len=LENGTH,
                               kv_max_len=2 * LENGTH)
  variables = mixer.init(jax.random.key(0), q, k, v, q_mask=q_mask, kv_mask=kv_mask)
  out = mixer.apply(variables, q, k, v, q_mask=q_mask, kv_mask=kv_mask)
  assert out.shape == q.shape


def test_unknown_name_lists_registered():
  with pytest.raises(ValueError, match="registered: .*transformer"):
    registry.get("no_such_attention")


def test_unknown_kwarg_is_an_error():
  with pytest.raises(ValueError, match="unknown config.model.attention_kwargs"):
    registry.build_mixer("transformer", {"windw": 3})


def test_unsupported_capability_fails_at_build():
  for name in NAMES:
    spec = registry.get(name)
    if not spec.supports_causal:
      with pytest.raises(ValueError, match="no causal form"):
        registry.build_mixer(name, SMALL_KWARGS.get(name, {}), causal=True, max_len=LENGTH)
    if not spec.supports_cross:
      with pytest.raises(ValueError, match="cross attention"):
        registry.build_mixer(name, SMALL_KWARGS.get(name, {}), cross=True, max_len=LENGTH)


def compiled_memory(name, length, causal=False):
  """Bytes XLA plans for forward+backward of the mixer at `length` (compile only)."""
  mixer = registry.build_mixer(name, MEMORY_KWARGS.get(name, {}), causal=causal,
                               max_len=length, kv_max_len=length)
  shape = (1, length, 2, 16)
  q = k = v = jax.ShapeDtypeStruct(shape, jnp.float32)
  mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)
  variables = jax.eval_shape(
      functools.partial(mixer.init, q_mask=None, kv_mask=None),
      jax.random.key(0), q, k, v)

  def loss(variables, q, k, v, mask):
    return mixer.apply(variables, q, k, v, q_mask=mask, kv_mask=mask).sum()

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))).lower(
      variables, q, k, v, mask).compile()
  stats = compiled.memory_analysis()
  return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


@pytest.mark.parametrize("name", SUBQUADRATIC)
def test_memory_grows_subquadratically(name):
  ratio = compiled_memory(name, 8192) / compiled_memory(name, 4096)
  assert ratio <= 2.5, f"{name}: memory grows {ratio:.2f}x from 4096 to 8192"


def test_full_attention_memory_is_quadratic():
  # The check above can fail: exact attention grows about 4x.
  assert compiled_memory("transformer", 4096) / compiled_memory("transformer", 2048) > 3.0
