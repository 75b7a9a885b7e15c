"""Synthesizer: every mode runs and respects padding and causality; mixture weights sum to one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.synthesizer import mix_logits

LENGTH, HEADS, DIM, FEATURES = 16, 2, 8, 12
MODES = [{"mode": "dense"}, {"mode": "factorized_dense"}, {"mode": "random"},
         {"mode": "factorized_random", "k": 4}, {"mode": "random", "trainable": False},
         {"mode": "mixture", "mixture": ("dense", "factorized_random")},
         {"mode": "mixture", "mixture": ("random",), "with_dot_product": True}]


def inputs(seed=0, length=LENGTH):
  keys = jax.random.split(jax.random.key(seed), 4)
  q, k, v = [jax.random.normal(key, (2, length, HEADS, DIM)) for key in keys[:3]]
  return q, k, v, jax.random.normal(keys[3], (2, length, FEATURES))


def build(kwargs, causal=False, max_len=LENGTH):
  return registry.build_mixer("synthesizer", kwargs, causal=causal, max_len=max_len,
                              kv_max_len=max_len)


@pytest.mark.parametrize("kwargs", MODES, ids=lambda kw: "-".join(map(str, kw.values())))
def test_mode_runs_and_ignores_padding(kwargs):
  q, k, v, x = inputs()
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[10], [LENGTH]])
  mixer = build(kwargs, max_len=20)   # shorter inputs use the leading block
  params = mixer.init(jax.random.key(0), q, k, v, q_mask=mask, kv_mask=mask, inputs_q=x)
  apply = lambda q, k, v: mixer.apply(params, q, k, v, q_mask=mask, kv_mask=mask, inputs_q=x)
  out = apply(q, k, v)
  assert out.shape == q.shape and bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.abs(out[0, 10:]).max()) == 0.0
  huge = [jnp.where(mask[..., None, None], t, 1e3) for t in (q, k, v)]
  np.testing.assert_allclose(apply(*huge)[0, :10], out[0, :10], atol=1e-5)


@pytest.mark.parametrize("kwargs", MODES[:2] + MODES[-1:], ids=["dense", "fdense", "mix"])
def test_causal_no_leak_including_inputs_q(kwargs):
  q, k, v, x = inputs()
  mixer = build(kwargs, causal=True)
  params = mixer.init(jax.random.key(0), q, k, v, inputs_q=x)
  position = 7
  out_at = lambda q, k, v, x: mixer.apply(params, q, k, v, inputs_q=x)[:, position].sum()
  grads = jax.grad(out_at, argnums=(0, 1, 2, 3))(q, k, v, x)
  for name, grad in zip(("q", "k", "v", "inputs_q"), grads):
    assert float(jnp.abs(grad[:, position + 1:]).max()) == 0.0, name
  assert float(jnp.abs(grads[2][:, :position + 1]).max()) > 0.0


def test_random_mode_with_identity_matrix_copies_values():
  q, k, v, _ = inputs()
  mixer = build({"mode": "random"})
  params = mixer.init(jax.random.key(0), q, k, v)
  identity = {"params": {"random": 1e4 * jnp.tile(jnp.eye(LENGTH)[None], (HEADS, 1, 1))}}
  np.testing.assert_allclose(mixer.apply(identity, q, k, v), v, atol=1e-5)
  # A matrix with equal entries averages the values (causal: over the prefix).
  flat = {"params": {"random": jnp.zeros_like(params["params"]["random"])}}
  np.testing.assert_allclose(mixer.apply(flat, q, k, v),
                             jnp.broadcast_to(v.mean(1, keepdims=True), v.shape), atol=1e-5)
  prefix_mean = jnp.cumsum(v, axis=1) / jnp.arange(1, LENGTH + 1)[None, :, None, None]
  np.testing.assert_allclose(build({"mode": "random"}, causal=True).apply(flat, q, k, v),
                             prefix_mean, atol=1e-5)


def test_fixed_random_mode_has_no_params_and_depends_on_seed():
  q, k, v, _ = inputs()
  fixed = build({"mode": "random", "trainable": False})
  assert fixed.init(jax.random.key(0), q, k, v) == {}
  other = build({"mode": "random", "trainable": False, "seed": 1})
  assert float(jnp.abs(fixed.apply({}, q, k, v) - other.apply({}, q, k, v)).max()) > 1e-4


def test_mixture_weights_sum_to_one():
  q, k, v, x = inputs()
  mixer = build({"mode": "mixture", "mixture": ("dense", "random"), "with_dot_product": True})
  params = mixer.init(jax.random.key(0), q, k, v, inputs_q=x)
  params = {"params": dict(params["params"], mixture_logits=jnp.array([0.3, -2.0, 1.5]))}
  _, state = mixer.apply(params, q, k, v, inputs_q=x, mutable=["intermediates"])
  alpha = state["intermediates"]["mixture_weights"][0]
  assert alpha.shape == (3,)
  np.testing.assert_allclose(float(alpha.sum()), 1.0, rtol=1e-6)
  # Hence mixing identical logits gives those logits, whatever the learned weights.
  s = jax.random.normal(jax.random.key(3), (1, HEADS, 4, 4))
  np.testing.assert_allclose(mix_logits([s, s, s], jnp.array([0.3, -2.0, 1.5]))[0], s, rtol=1e-5)


def test_errors_are_clear():
  q, k, v, _ = inputs()
  with pytest.raises(ValueError, match="inputs_q=None"):
    build({"mode": "dense"}).init(jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="got 16 queries / 16 keys but max_len=8"):
    build({"mode": "random"}, max_len=8).init(jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="synthesizer mode 'sparse'"):
    build({"mode": "sparse"}).init(jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="need two or more terms"):
    build({"mode": "mixture", "mixture": ("random",)}).init(jax.random.key(0), q, k, v)
