"""LRA schedules and the decoupled-weight-decay Adam."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl import flags
from ml_collections import config_flags

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


# ------------------------------------------------------------------ per-parameter-group optimiser
def group(match, learning_rate, weight_decay):
  return ml_collections.ConfigDict({"match": match, "learning_rate": learning_rate,
                                    "weight_decay": weight_decay})


def tiny_params():
  return {"encoder": {"block_0": {"attention": {"log_dt": jnp.array([0.5, -1.0]),
                                                "kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]])},
                                  "ffn_norm": {"scale": jnp.array([1.5, 0.5]),
                                               "bias": jnp.array([0.2, -0.1])}}},
          "head": {"logits": {"kernel": jnp.array([[0.3], [-0.7]])}}}


def tiny_grads(scale=1.0):
  return {"encoder": {"block_0": {"attention": {"log_dt": scale * jnp.array([0.2, -0.4]),
                                                "kernel": scale * jnp.array([[1.0, 0.0],
                                                                             [-0.5, 0.3]])},
                                  "ffn_norm": {"scale": scale * jnp.array([-0.3, 0.6]),
                                               "bias": scale * jnp.array([0.1, 0.9])}}},
          "head": {"logits": {"kernel": scale * jnp.array([[2.0], [-0.2]])}}}


def test_param_groups_update_equals_adamw_written_out_per_group():
  """Two groups and the default one, two steps of the rsqrt schedule: each leaf follows AdamW by
  hand (as in test_three_updates_equal_adamw_written_out) with its own group's peak rate through
  the main schedule's shape and its own weight decay."""
  cfg = train_cfg(schedule="rsqrt", learning_rate=0.5, warmup_steps=2, weight_decay=0.1,
                  b1=0.9, b2=0.98, eps=1e-3, grad_clip_norm=0.0)
  cfg.param_groups.ssm = group((r"/log_dt$",), 0.02, 0.0)
  cfg.param_groups.norms = group(("_norm/",), 0.2, 0.3)
  peak_and_decay = {"encoder/block_0/attention/log_dt": (0.02, 0.0),
                    "encoder/block_0/attention/kernel": (0.5, 0.1),
                    "encoder/block_0/ffn_norm/scale": (0.2, 0.3),
                    "encoder/block_0/ffn_norm/bias": (0.2, 0.3),
                    "head/logits/kernel": (0.5, 0.1)}
  tx = optim.make_optimizer(cfg)
  params = tiny_params()
  state = tx.init(params)
  flat = lambda tree: {optim.param_path(p): np.asarray(v, np.float64)
                       for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
  assert set(flat(params)) == set(peak_and_decay)
  expected = flat(params)
  m = {k: np.zeros_like(v) for k, v in expected.items()}
  v = {k: np.zeros_like(v) for k, v in expected.items()}
  for t, scale in ((1, 1.0), (2, -0.5), (3, 2.0)):
    g = tiny_grads(scale)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    for k, gk in flat(g).items():
      peak, decay = peak_and_decay[k]
      lr = peak * min(1.0, (t - 1) / 2) / math.sqrt(max(t - 1, 2))  # the schedule at t - 1
      m[k] = 0.9 * m[k] + 0.1 * gk
      v[k] = 0.98 * v[k] + 0.02 * gk ** 2
      m_hat, v_hat = m[k] / (1 - 0.9 ** t), v[k] / (1 - 0.98 ** t)
      expected[k] = expected[k] - lr * (m_hat / (np.sqrt(v_hat) + 1e-3) + decay * expected[k])
    for k, got in flat(params).items():
      np.testing.assert_allclose(got, expected[k], rtol=1e-5, atol=1e-7, err_msg=f"{k} {t}")


def _optimizer_before_groups(train):
  """make_optimizer as it was before parameter groups, written out."""
  adam = optax.adamw(optim.learning_rate_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                     weight_decay=train.weight_decay)
  if train.grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(train.grad_clip_norm), adam)
  return adam


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_no_param_groups_is_the_single_adamw_of_before(clip):
  cfg = train_cfg(schedule="rsqrt", learning_rate=0.5, warmup_steps=2, grad_clip_norm=clip)
  assert len(cfg.param_groups) == 0  # the default
  without_field = ml_collections.ConfigDict({k: v for k, v in cfg.items() if k != "param_groups"})
  before = _optimizer_before_groups(cfg)
  for tx in (optim.make_optimizer(cfg), optim.make_optimizer(without_field)):  # an old run dir
    params, ref_params = tiny_params(), tiny_params()
    state, ref_state = tx.init(params), before.init(ref_params)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(ref_state)
    for scale in (1.0, -3.0, 0.5):
      updates, state = tx.update(tiny_grads(scale), state, params)
      ref_updates, ref_state = before.update(tiny_grads(scale), ref_state, ref_params)
      jax.tree_util.tree_map(np.testing.assert_array_equal, updates, ref_updates)
      params = optax.apply_updates(params, updates)
      ref_params = optax.apply_updates(ref_params, ref_updates)


@pytest.mark.parametrize("groups, error", [
    ({"ssm": group(("log_dt",), 0.01, 0.0), "attn": group(("attention/",), 0.1, 0.0)},
     r"parameter 'encoder/block_0/attention/log_dt' is matched by more than one group: "
     r"config.train.param_groups.attn.match=\('attention/',\), "  # ConfigDict sorts keys
     r"config.train.param_groups.ssm.match=\('log_dt',\)"),
    ({"ssm": group(("log_dt",), 0.01, 0.0), "lru": group(("nu_log$", "gamma_log$"), 0.01, 0.0)},
     r"config.train.param_groups.lru matches no parameter: its patterns "
     r"\('nu_log\$', 'gamma_log\$'\)"),
])
def test_overlapping_or_unmatched_groups_fail_at_init_naming_them(groups, error):
  cfg = train_cfg()
  for name, spec in groups.items():
    cfg.param_groups[name] = spec
  tx = optim.make_optimizer(cfg)
  with pytest.raises(ValueError, match=error):
    tx.init(tiny_params())


@pytest.mark.parametrize("spec, error", [
    ({"learning_rate": 0.01, "weight_decay": 0.0},
     r"config.train.param_groups.ssm has no 'match'; a group's fields are match, "
     "learning_rate, weight_decay"),
    ({"match": ("log_dt",), "learnig_rate": 0.01, "weight_decay": 0.0},
     r"config.train.param_groups.ssm has the unknown field 'learnig_rate' \(did you mean 'learning_rate'"),
    ({"match": "log_dt", "learning_rate": 0.01, "weight_decay": 0.0},
     r"config.train.param_groups.ssm.match is 'log_dt'; expected a non-empty tuple"),
    ({"match": ("log_dt(",), "learning_rate": 0.01, "weight_decay": 0.0},
     r"config.train.param_groups.ssm.match: 'log_dt\(' is not a regular expression"),
    ({"match": ("log_dt",), "learning_rate": "fast", "weight_decay": 0.0},
     r"config.train.param_groups.ssm.learning_rate is 'fast'; expected a number"),
])
def test_a_bad_group_field_fails_when_the_optimiser_is_built(spec, error):
  cfg = train_cfg()
  cfg.param_groups.ssm = ml_collections.ConfigDict(spec)
  with pytest.raises(ValueError, match=error):
    optim.make_optimizer(cfg)


def test_default_is_a_reserved_group_name():
  cfg = train_cfg()
  cfg.param_groups.default = group(("log_dt",), 0.01, 0.0)
  with pytest.raises(ValueError, match="param_groups.default: the group name 'default' is "
                                       "reserved"):
    optim.make_optimizer(cfg)


def test_gradient_clipping_is_global_across_groups():
  """With b1 = b2 = 0 and eps = 1, Adam's step is -lr * g / (|g| + 1) per coordinate, so the
  clipped gradient can be read back from each leaf's update with its group's rate: the whole
  tree's norm is grad_clip_norm (one clip over all groups, before their steps), and every leaf is
  the raw gradient times the same factor (a clip per group would give each group norm 1)."""
  cfg = train_cfg(schedule="constant", learning_rate=1.0, weight_decay=0.0, grad_clip_norm=1.0,
                  b1=0.0, b2=0.0, eps=1.0)
  cfg.param_groups.ssm = group(("/log_dt$",), 0.25, 0.0)
  cfg.param_groups.norms = group(("_norm/",), 0.5, 0.0)
  lr = {"log_dt": 0.25, "scale": 0.5, "bias": 0.5}
  tx = optim.make_optimizer(cfg)
  params, grads = tiny_params(), tiny_grads(100.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  clipped, raw = [], []
  for (path, u), g in zip(jax.tree_util.tree_flatten_with_path(updates)[0],
                          jax.tree_util.tree_leaves(grads)):
    ratio = -np.asarray(u, np.float64) / lr.get(optim.param_path(path).split("/")[-1], 1.0)
    clipped.append(np.sign(ratio) * np.abs(ratio) / (1 - np.abs(ratio)))  # r = c / (|c| + 1)
    raw.append(np.asarray(g, np.float64))
  norm = np.sqrt(sum(np.sum(c ** 2) for c in clipped))
  assert norm == pytest.approx(1.0, rel=1e-3)
  raw_norm = np.sqrt(sum(np.sum(g ** 2) for g in raw))
  for c, g in zip(clipped, raw):
    np.testing.assert_allclose(c, g / raw_norm, rtol=1e-3, atol=1e-6)


GROUP_CONFIG_FILE = '''
import ml_collections
from configs import defaults

def get_config(preset=None):
  config = defaults.shared_config()
  config.train.schedule, config.train.learning_rate, config.train.weight_decay = "constant", 0.1, 0.0
  config.train.param_groups.ssm = ml_collections.ConfigDict(
      {"match": ("/log_dt$",), "learning_rate": 1e-3, "weight_decay": 0.5})
  return defaults.finalize(config, preset, {})
'''


def resolve(config_file, *overrides):
  """The config as train.py and lra.sweep.resolve_config parse it (config_flags, locked)."""
  values, argv = flags.FlagValues(), ["train.py", f"--config={config_file}", *overrides]
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_a_config_files_group_is_overridden_from_the_command_line(tmp_path):
  """With zero gradients a step is -lr * wd * p, so the update shows the group's rate and decay
  reached the optimiser: ssm leaves (lr 0.02 from the command line, decay 0.5) shrink by 1%, the
  rest (decay 0) stay."""
  path = tmp_path / "ssm_config.py"
  path.write_text(GROUP_CONFIG_FILE)
  config = resolve(path, "--config.train.param_groups.ssm.learning_rate=0.02",
                   "--config.train.param_groups.ssm.match=('log_dt$', 'ffn_norm/scale$')")
  assert config.train.param_groups.ssm.match == ("log_dt$", "ffn_norm/scale$")
  tx = optim.make_optimizer(config.train)
  params = tiny_params()
  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  for path_, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = optim.param_path(path_)
    in_group = name.endswith(("log_dt", "ffn_norm/scale"))
    leaf = dict((optim.param_path(q), x)
                for q, x in jax.tree_util.tree_flatten_with_path(params)[0])[name]
    np.testing.assert_allclose(u, -0.02 * 0.5 * leaf if in_group else 0 * leaf, rtol=1e-6,
                               err_msg=name)
  # a group is defined in a config file: the locked config refuses a new one from the command line
  with pytest.raises(KeyError, match="lru"):
    resolve(path, "--config.train.param_groups.lru.learning_rate=0.02")
