"""Synthesizer: every mode runs and respects padding and causality; mixture weights sum to one.

Inputs are numpy and computations are jitted whole (op-by-op compiling dominates on CPU).
"""
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.synthesizer import mix_logits

LENGTH, HEADS, DIM, FEATURES = 16, 2, 8, 12
# "random" alone is the default, run by the registry-wide tests in tests/test_attention.py.
MODES = [{"mode": "dense"}, {"mode": "factorized_dense"}, {"mode": "factorized_random", "k": 4},
         {"mode": "mixture", "mixture": ("dense", "factorized_random")},
         {"mode": "mixture", "mixture": ("random",), "with_dot_product": True}]
EVERYTHING = {"mode": "mixture", "with_dot_product": True,
              "mixture": ("dense", "factorized_dense", "random", "factorized_random")}


def inputs(seed=0, length=LENGTH):
  rng = np.random.default_rng(seed)
  q, k, v = [rng.standard_normal((2, length, HEADS, DIM), np.float32) for _ in range(3)]
  return q, k, v, rng.standard_normal((2, length, FEATURES), np.float32)


def random_params(mixer, *args, **kwargs):
  """Parameters of the right shapes with random values (no compile of the module's init)."""
  shapes = jax.eval_shape(mixer.init, jax.random.key(0), *args, **kwargs)
  rng = np.random.default_rng(1)
  return jax.tree_util.tree_map(
      lambda p: 0.5 * rng.standard_normal(p.shape).astype(np.float32), shapes)


def build(kwargs, causal=False, max_len=LENGTH):
  return registry.build_mixer("synthesizer", kwargs, causal=causal, max_len=max_len,
                              kv_max_len=max_len)


@pytest.mark.parametrize("kwargs", MODES, ids=lambda kw: "-".join(map(str, kw.values())))
def test_mode_runs_and_ignores_padding(kwargs):
  q, k, v, x = inputs()
  mask = np.arange(LENGTH)[None, :] < np.array([[10], [LENGTH]])
  mixer = build(kwargs, max_len=20)   # shorter inputs use the leading block
  params = random_params(mixer, q, k, v, q_mask=mask, kv_mask=mask, inputs_q=x)
  apply = jax.jit(lambda q, k, v: mixer.apply(params, q, k, v, q_mask=mask, kv_mask=mask,
                                              inputs_q=x))
  out = np.asarray(apply(q, k, v))
  assert out.shape == q.shape and np.all(np.isfinite(out))
  assert np.abs(out[0, 10:]).max() == 0.0
  huge = [np.where(mask[..., None, None], t, 1e3).astype(np.float32) for t in (q, k, v)]
  np.testing.assert_allclose(apply(*huge)[0, :10], out[0, :10], atol=1e-5)


def test_causal_no_leak_in_any_mode_including_inputs_q():
  q, k, v, x = inputs()
  mixer = build(EVERYTHING, causal=True)   # every synthesis path and Q K^T, mixed
  params = random_params(mixer, q, k, v, inputs_q=x)
  position = 7
  out_at = lambda q, k, v, x: mixer.apply(params, q, k, v, inputs_q=x)[:, position].sum()
  grads = jax.jit(jax.grad(out_at, argnums=(0, 1, 2, 3)))(q, k, v, x)
  for name, grad in zip(("q", "k", "v", "inputs_q"), grads):
    assert float(np.abs(grad[:, position + 1:]).max()) == 0.0, name
    assert float(np.abs(grad[:, :position + 1]).max()) > 0.0, name   # the past does matter


def test_random_mode_with_identity_matrix_copies_values():
  q, k, v, _ = inputs()
  apply = jax.jit(build({"mode": "random"}).apply)
  identity = {"params": {"random": 1e4 * np.tile(np.eye(LENGTH, dtype=np.float32), (HEADS, 1, 1))}}
  np.testing.assert_allclose(apply(identity, q, k, v), v, atol=1e-5)
  # A matrix with equal entries averages the values (causal: over the prefix).
  flat = {"params": {"random": np.zeros((HEADS, LENGTH, LENGTH), np.float32)}}
  np.testing.assert_allclose(apply(flat, q, k, v),
                             np.broadcast_to(v.mean(1, keepdims=True), v.shape), atol=1e-5)
  prefix_mean = np.cumsum(v, axis=1) / np.arange(1, LENGTH + 1)[None, :, None, None]
  np.testing.assert_allclose(jax.jit(build({"mode": "random"}, causal=True).apply)(flat, q, k, v),
                             prefix_mean, atol=1e-5)


def test_fixed_random_mode_has_no_params_and_depends_on_seed():
  q, k, v, _ = inputs()
  fixed = build({"mode": "random", "trainable": False})
  assert jax.eval_shape(fixed.init, jax.random.key(0), q, k, v) == {}
  other = build({"mode": "random", "trainable": False, "seed": 1})
  difference = jax.jit(lambda: fixed.apply({}, q, k, v) - other.apply({}, q, k, v))()
  assert float(np.abs(difference).max()) > 1e-4


def test_mixture_weights_sum_to_one():
  q, k, v, x = inputs()
  mixer = build({"mode": "mixture", "mixture": ("dense", "random"), "with_dot_product": True})
  params = random_params(mixer, q, k, v, inputs_q=x)
  weight_logits = np.array([0.3, -2.0, 1.5], np.float32)
  params = {"params": dict(params["params"], mixture_logits=weight_logits)}
  _, state = jax.jit(lambda p: mixer.apply(p, q, k, v, inputs_q=x,
                                           mutable=["intermediates"]))(params)
  alpha = state["intermediates"]["mixture_weights"][0]
  assert alpha.shape == (3,)
  np.testing.assert_allclose(float(alpha.sum()), 1.0, rtol=1e-6)
  # Hence mixing identical logits gives those logits, whatever the learned weights.
  s = np.random.default_rng(3).standard_normal((1, HEADS, 4, 4), np.float32)
  np.testing.assert_allclose(jax.jit(mix_logits)([s, s, s], weight_logits)[0], s, rtol=1e-5)


def test_errors_are_clear():
  q, k, v, _ = inputs()
  init = lambda kwargs, **kw: jax.eval_shape(build(kwargs, **kw).init, jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="inputs_q=None"):
    init({"mode": "dense"})
  with pytest.raises(ValueError, match="got 16 queries / 16 keys but max_len=8"):
    init({"mode": "random"}, max_len=8)
  with pytest.raises(ValueError, match="synthesizer mode 'sparse'"):
    init({"mode": "sparse"})
  with pytest.raises(ValueError, match="need two or more terms"):
    init({"mode": "mixture", "mixture": ("random",)})


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("kwargs", [{"mode": "random"}, {"mode": "factorized_dense"},
                                    {"mode": "random", "trainable": False}, EVERYTHING],
                         ids=["random", "factorized_dense", "fixed_random", "everything"])
def test_decoding_step_by_step_matches_the_causal_forward(kwargs):
  """L = 10 < max_len = 16 (the leading block), one kv head for two query heads."""
  from tests.decode_steps import mixer_steps
  q, k, v, x = inputs(50, length=10)
  k, v = k[:, :, :1], v[:, :, :1]
  mixer = build(kwargs, causal=True)
  params = random_params(mixer, q, q, q, inputs_q=x).get("params", {})
  full, stepped, cache = mixer_steps(mixer, q, k, v, inputs_q=x, params=params)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["cached_value"].shape == (2, 10, 1, DIM)
  assert ("cached_key" in cache) == kwargs.get("with_dot_product", False)
