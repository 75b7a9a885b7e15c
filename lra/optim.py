"""LRA's optimiser and learning-rate schedules, as Optax objects."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections
import optax


def rsqrt_schedule(base: float, warmup: int):
  """LRA's 'constant * linear_warmup * rsqrt_decay':
  lr = base * min(1, step / warmup) / sqrt(max(step, warmup))."""
  warmup = max(int(warmup), 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return base * jnp.minimum(1.0, step / warmup) / jnp.sqrt(jnp.maximum(step, warmup))

  return schedule


def learning_rate_schedule(train: ml_collections.ConfigDict):
  if train.schedule == "rsqrt":
    return rsqrt_schedule(train.learning_rate, train.warmup_steps)
  if train.schedule == "cosine":  # linear warm-up, then one cosine cycle to zero
    return optax.warmup_cosine_decay_schedule(
        0.0, train.learning_rate, max(train.warmup_steps, 1),
        max(train.num_train_steps, train.warmup_steps + 1))
  if train.schedule == "constant":
    return optax.constant_schedule(train.learning_rate)
  raise ValueError(f"config.train.schedule={train.schedule!r}; expected 'rsqrt', 'cosine' "
                   "or 'constant'")


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(b1, b2=0.98, eps=1e-9) with decoupled weight decay, optional global-norm clipping."""
  adam = optax.adamw(learning_rate_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                     weight_decay=train.weight_decay)
  if train.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), adam)
  return adam
