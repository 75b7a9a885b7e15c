"""LRA schedules and the decoupled-weight-decay Adam."""
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
  assert isinstance(tx, optax.GradientTransformation)
  # With b1 = b2 = 0 and eps = 1, Adam's step is -g / (|g| + 1) per coordinate, so it shows
  # whether the gradient (norm 100) was clipped to norm 1 first.
  for clip, expected in ((1.0, 0.5), (0.0, 100 / 101)):
    tx = optim.make_optimizer(train_cfg(schedule="constant", learning_rate=1.0, weight_decay=0.0,
                                        grad_clip_norm=clip, b1=0.0, b2=0.0, eps=1.0))
    params = {"w": jnp.zeros(1)}
    updates, _ = tx.update({"w": jnp.full(1, 100.0)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -expected, rtol=1e-5)
