"""LRA schedules and the decoupled-weight-decay Adam."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import defaults
from lra import optim


def train_cfg(**kw):
  cfg = defaults.shared_config().train
  for key, value in kw.items():
    setattr(cfg, key, value)
  return cfg


def test_rsqrt_schedule_is_lras_formula():
  schedule = optim.rsqrt_schedule(0.05, 1000)
  for step in (1, 500, 1000, 4000):
    expected = 0.05 * min(1, step / 1000) / np.sqrt(max(step, 1000))
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6)


def test_cosine_schedule_warms_up_then_decays_to_zero():
  schedule = optim.learning_rate_schedule(train_cfg(schedule="cosine", learning_rate=1e-3,
                                                    warmup_steps=10, num_train_steps=110))
  assert float(schedule(0)) == 0.0
  assert float(schedule(10)) == pytest.approx(1e-3)
  assert float(schedule(60)) == pytest.approx(0.5e-3, rel=1e-3)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-9)


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="config.train.schedule='linear'"):
    optim.learning_rate_schedule(train_cfg(schedule="linear"))


def test_weight_decay_is_decoupled_and_clipping_applies():
  tx = optim.make_optimizer(train_cfg(schedule="constant", learning_rate=0.1, weight_decay=0.5))
  params = {"w": jnp.ones(3)}
  updates, _ = tx.update({"w": jnp.zeros(3)}, tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], 1 - 0.1 * 0.5)
  tx = optim.make_optimizer(train_cfg(schedule="constant", learning_rate=1.0, weight_decay=0.0,
                                      grad_clip_norm=1.0, b1=0.0, b2=0.0, eps=0.0))
  # With b1 = b2 = 0 and eps = 1, Adam's step is -g / (|g| + 1) per coordinate, so it shows
  # whether the gradient (norm 100) was clipped to norm 1 first.
  for clip, expected in ((1.0, 0.5), (0.0, 100 / 101)):
    tx = optim.make_optimizer(train_cfg(schedule="constant", learning_rate=1.0, weight_decay=0.0,
                                        grad_clip_norm=clip, b1=0.0, b2=0.0, eps=1.0))
    params = {"w": jnp.zeros(1)}
    updates, _ = tx.update({"w": jnp.full(1, 100.0)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -expected, rtol=1e-5)


def test_schedule_from_the_config_follows_each_formula():
  """learning_rate_schedule(config.train) at chosen steps, against the formulas written out."""
  rsqrt = optim.learning_rate_schedule(train_cfg(schedule="rsqrt", learning_rate=0.05,
                                                 warmup_steps=100))
  for step in (0, 1, 50, 100, 400, 2500):
    expected = 0.05 * min(1.0, step / 100) / math.sqrt(max(step, 100))
    assert float(rsqrt(step)) == pytest.approx(expected, rel=1e-6, abs=1e-12), step
  cosine = optim.learning_rate_schedule(train_cfg(schedule="cosine", learning_rate=2e-3,
                                                  warmup_steps=20, num_train_steps=220))
  for step in (0, 5, 15, 20, 45, 120, 170, 220):
    if step < 20:
      expected = 2e-3 * step / 20
    else:
      expected = 2e-3 * 0.5 * (1 + math.cos(math.pi * (step - 20) / 200))
    assert float(cosine(step)) == pytest.approx(expected, rel=1e-5, abs=1e-10), step
  constant = optim.learning_rate_schedule(train_cfg(schedule="constant", learning_rate=0.3))
  assert [float(constant(s)) for s in (0, 7, 10_000)] == pytest.approx([0.3] * 3)


def test_weight_decay_reaches_every_parameter_like_flax_optim_adam():
  """lra/optim.py gives optax.adamw no mask: as LRA's flax.optim.Adam(weight_decay=...), the
  decay applies to every parameter, biases and LayerNorm scales included. With zero gradients
  Adam's own step is zero, so one update is exactly p * (1 - lr * weight_decay)."""
  tx = optim.make_optimizer(train_cfg(schedule="constant", learning_rate=0.1, weight_decay=0.5))
  params = {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.full(3, -1.0)},
            "norm": {"scale": jnp.full(3, 4.0), "bias": jnp.full(3, 0.5)}}
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  new = optax.apply_updates(params, updates)
  jax.tree_util.tree_map(lambda p, q: np.testing.assert_allclose(q, p * (1 - 0.1 * 0.5),
                                                                 rtol=1e-6), params, new)


def test_three_updates_equal_adamw_written_out():
  """make_optimizer(config.train) against AdamW by hand (Loshchilov & Hutter, Alg. 2, as optax
  orders it): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, bias-corrected by 1 - b^t,
  p -= lr_t * (m_hat / (sqrt(v_hat) + eps) + wd * p), lr_t from the rsqrt schedule at t - 1."""
  cfg = train_cfg(schedule="rsqrt", learning_rate=0.5, warmup_steps=2, weight_decay=0.1,
                  b1=0.9, b2=0.98, eps=1e-3, grad_clip_norm=0.0)
  tx = optim.make_optimizer(cfg)
  params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.3])}
  grads = [{"w": jnp.array([[0.2, -0.4], [1.0, 0.0]]), "b": jnp.array([-0.5, 0.3])},
           {"w": jnp.array([[-0.1, 0.3], [0.5, 2.0]]), "b": jnp.array([0.2, 0.2])},
           {"w": jnp.array([[0.4, 0.4], [-1.0, 0.1]]), "b": jnp.array([0.0, -0.7])}]
  state = tx.init(params)
  expected = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in expected.items()}
  v = {k: np.zeros_like(v) for k, v in expected.items()}
  for t, g in enumerate(grads, start=1):
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    lr = 0.5 * min(1.0, (t - 1) / 2) / math.sqrt(max(t - 1, 2))  # 0, 0.25/sqrt 2, 0.5/sqrt 2
    for k in expected:
      gk = np.asarray(g[k], np.float64)
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.98 * v[k] + 0.02 * gk ** 2
      m_hat, v_hat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.98 ** t)
      expected[k] = expected[k] - lr * (m_hat / (np.sqrt(v_hat) + 1e-3) + 0.1 * expected[k])
    for k in expected:
      np.testing.assert_allclose(params[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=f"{k} {t}")
  assert not np.allclose(params["w"], [[0.5, -1.0], [2.0, 0.25]])  # it did move
