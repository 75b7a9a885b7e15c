"""H3: the FFT-convolution module against a step-by-step recurrence written here in numpy
(shift SSM as a shifting state, diagonal SSM as x_t = dA x_{t-1} + dB u_t), with the module's
own parameters; causality; padding; the S4D-Lin / S4D-Inv and shift-SSM initialisation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.h3 import H3, s4d_a_init, shift_ssm_kernel

LENGTH, FEATURES, STATE = 13, 8, 6


def inputs(seed=0, batch=2, length=LENGTH, features=FEATURES):
  return np.random.default_rng(seed).standard_normal((batch, length, features)).astype(np.float32)


def lengths_mask(valid, length=LENGTH):
  return np.arange(length)[None, :] < np.array(valid)[:, None]


def random_params(module, x, seed=7):
  """Parameters of `module` for input `x`, drawn here in numpy (shapes from jax.eval_shape, no
  compiled init): every value is off its structured init, so no term can hide behind a 0 or a
  1, and the SSM ones stay in their working range (stable A, dt in [1e-3, 1e-1])."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    noise = rng.standard_normal(leaf.shape)
    if "log_dt" in name:
      value = rng.uniform(np.log(1e-3), np.log(1e-1), leaf.shape)
    elif "inv_A_real" in name:
      value = np.log(0.5) + 0.3 * noise
    elif "A_imag" in name:
      value = np.pi * np.arange(leaf.shape[-1]) + 0.3 * noise
    elif name.endswith("['B']"):
      value = np.stack([np.ones(leaf.shape[:-1]), np.zeros(leaf.shape[:-1])], -1) + 0.3 * noise
    else:
      value = 0.5 * noise
    return value.astype(np.float32)

  return {"params": jax.tree_util.tree_map_with_path(draw, shapes)}


@functools.lru_cache(maxsize=None)
def _build(items):
  module = H3(**{"d_state": STATE, **dict(items)})
  return module, random_params(module, inputs())


def build(**kwargs):
  """(module, variables drawn by random_params), cached."""
  return _build(tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=None)
def jitted(module):
  return jax.jit(lambda variables, x, mask: module.apply(variables, x, mask))


def reference(params, x, mask, head_dim, disc):
  """The H3 layer step by step (HazyResearch/H3 H3.step, in float64)."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = np.where(mask[:, :, None], x.astype(np.float64), 0.0)
  lin = lambda name, a: a @ p[name]["kernel"] + p[name]["bias"]
  q, k, v = lin("q_proj", x), lin("k_proj", x), lin("v_proj", x)
  batch, length, features = x.shape
  heads = features // head_dim
  n = p["shift_B"].shape[1]
  a = -np.exp(p["inv_A_real"]) + 1j * p["A_imag"]          # [H, N/2]
  dt = np.exp(p["log_dt"])[:, None]
  b = p["B"][..., 0] + 1j * p["B"][..., 1]
  c = p["C"][..., 0] + 1j * p["C"][..., 1]
  if disc == "zoh":
    da, db = np.exp(dt * a), b * (np.exp(dt * a) - 1) / a
  else:
    da = (1 + dt * a / 2) / (1 - dt * a / 2)
    db = b * dt / (1 - dt * a / 2)
  out = np.zeros_like(x)
  for i in range(batch):
    shift_state = np.zeros((features, n))
    ssm_state = np.zeros((heads, head_dim, head_dim, n // 2), complex)
    for t in range(length):
      k_t = k[i, t] * mask[i, t]
      # shift SSM: the state moves down one slot, B u enters, y = C . state (+ D u)
      shift_state = np.concatenate([np.zeros((features, 1)), shift_state[:, :-1]], 1)
      shift_state = shift_state + p["shift_B"] * k_t[:, None]
      k_shift = (p["shift_C"] * shift_state).sum(1) + p["shift_D"] * k_t
      kh, vh, qh = (a_.reshape(heads, head_dim) for a_ in (k_shift, v[i, t], q[i, t]))
      y = np.zeros((head_dim, heads))
      for h in range(heads):
        kv = np.outer(kh[h], vh[h]) * mask[i, t]                 # [d1, d2]
        ssm_state[h] = da[h] * ssm_state[h] + db[h] * kv[:, :, None]
        y_h = 2 * (c[h] * ssm_state[h]).sum(-1).real + p["D"][h] * kv
        y[:, h] = qh[h] @ y_h                                      # sum over d1
      out[i, t] = y.reshape(-1)                                    # channel d2 * heads + h
  return out @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]


@pytest.mark.parametrize("head_dim,disc,measure", [
    (1, "zoh", "diag-lin"), (2, "zoh", "diag-inv"), (1, "bilinear", "diag-inv"),
    (4, "bilinear", "diag-lin")])
def test_matches_sequential_reference(head_dim, disc, measure):
  module, variables = build(head_dim=head_dim, disc=disc, measure=measure)
  x, mask = inputs(1), lengths_mask([LENGTH, 9])
  out = jitted(module)(variables, x, mask)
  expected = reference(variables["params"], x, mask, head_dim, disc)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_shift_kernel_is_a_fir_of_n_taps():
  rng = np.random.default_rng(0)
  b, c = rng.standard_normal((2, 3, 4)).astype(np.float32)
  k = np.asarray(shift_ssm_kernel(jnp.asarray(b), jnp.asarray(c), 7))
  expected = np.zeros((7, 3))
  for j in range(4):
    expected[j] = (b[:, :4 - j] * c[:, j:]).sum(1)               # k[j] = sum_m B[m] C[m + j]
  np.testing.assert_allclose(k, expected, atol=1e-6)
  e1 = np.zeros_like(b)
  e1[:, 0] = 1
  np.testing.assert_allclose(shift_ssm_kernel(jnp.asarray(e1), jnp.asarray(c), 3), c[:, :3].T,
                             atol=1e-7)  # B = e_1 (H3's init): the kernel is C


CASES = {1: dict(head_dim=1, disc="zoh", measure="diag-lin"),
         2: dict(head_dim=2, disc="zoh", measure="diag-inv")}


@pytest.mark.parametrize("head_dim", [1, 2])
def test_causal_no_leak_gradient_and_forward(head_dim):
  module, variables = build(**CASES[head_dim])
  x, mask, t = inputs(2), lengths_mask([LENGTH, LENGTH]), 5
  grad = np.asarray(jax.jit(jax.grad(
      lambda x: module.apply(variables, x, mask)[0, t].sum()))(x))
  # The FFT convolution at 2L is causal exactly in exact arithmetic; in float32 its round-off
  # puts ~1e-9 on the future, so "no leak" is judged relative to the gradient on the past.
  past = np.abs(grad[0, :t + 1]).max()
  assert past > 0.1 and np.abs(grad[0, t + 1:]).max() <= 1e-6 * past
  changed = x.copy()
  # (Values of the input's own scale: the FFT's float32 round-off grows with the largest value.)
  changed[:, t + 1:] = inputs(3)[:, t + 1:]
  out, out2 = jitted(module)(variables, x, mask), jitted(module)(variables, changed, mask)
  scale = np.abs(np.asarray(out)).max()   # float32 FFT round-off is relative to the largest value
  np.testing.assert_allclose(out2[:, :t + 1], out[:, :t + 1], atol=1e-6 * scale, rtol=0)
  assert np.abs(np.asarray(out2[:, t + 1:] - out[:, t + 1:])).max() > 1e-3 * scale


def test_padding_invariance():
  """Padding at the end and in the middle: huge padded values never reach a real output."""
  module, variables = build(**CASES[2])
  x = inputs(4)
  mask = lengths_mask([LENGTH, 8])
  mask[0, 3:5] = False                                               # a hole in the middle
  noisy = np.where(mask[:, :, None], x, 1e4 * inputs(5))
  out, out2 = jitted(module)(variables, x, mask), jitted(module)(variables, noisy, mask)
  np.testing.assert_allclose(np.where(mask[:, :, None], out2, 0),
                             np.where(mask[:, :, None], out, 0), atol=1e-5, rtol=1e-5)


def test_initialisation_follows_s4d_and_h3():
  n, heads, features = STATE, FEATURES // 2, FEATURES
  init = lambda **kw: jax.jit(H3(d_state=STATE, **kw).init)(jax.random.PRNGKey(3), inputs())
  params = init(**CASES[2])["params"]
  m = np.arange(n // 2)
  np.testing.assert_allclose(-np.exp(params["inv_A_real"]), -0.5 * np.ones((heads, n // 2)),
                             rtol=1e-6)                              # S4D: real part -1/2
  np.testing.assert_allclose(params["A_imag"], np.tile(n / np.pi * (n / (2 * m + 1) - 1),
                                                       (heads, 1)), rtol=1e-6)  # S4D-Inv
  lin_real, lin_imag = s4d_a_init("diag-lin", features, n)   # what the module uses for lin
  np.testing.assert_allclose(lin_imag, np.pi * np.tile(m, (features, 1)), rtol=1e-6)  # pi n
  np.testing.assert_array_equal(lin_real, -0.5)
  np.testing.assert_array_equal(params["B"][..., 0], 1.0)           # B = 1 (dplr.py)
  np.testing.assert_array_equal(params["B"][..., 1], 0.0)
  dt = np.exp(params["log_dt"])
  assert dt.shape == (heads,) and np.all((dt >= 1e-3) & (dt <= 1e-1))
  expected_b = np.zeros((features, n))
  expected_b[:, 0] = 1.0
  np.testing.assert_array_equal(params["shift_B"], expected_b)       # shift SSM B = e_1
  assert np.abs(params["shift_C"]).max() <= 1 / np.sqrt(n)          # U(+-1/sqrt(N))
  c = np.asarray(params["C"])
  assert c.shape == (heads, n // 2, 2) and 0.2 < c.std() < 1.2      # complex N(0, 1)


@pytest.mark.parametrize("kwargs,field", [
    ({"disc": "euler"}, "disc"), ({"measure": "legs"}, "measure"),
    ({"head_dim": 3}, "head_dim"), ({"d_state": 5}, "d_state"),
    ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min")])
def test_bad_options_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    H3(**{"d_state": 4, **kwargs}).init(jax.random.PRNGKey(0), inputs(0, features=8))


def test_registered_as_causal_sequence_mixer_bfloat16():
  spec = registry.get("h3")
  assert spec.kind == "sequence" and spec.supports_causal and not spec.supports_cross
  mixer = registry.build_mixer("h3", {"d_state": 4}, causal=True)
  x = jnp.asarray(inputs(0), jnp.bfloat16)
  variables = random_params(mixer, x)
  out = jax.jit(mixer.apply)(variables, x, lengths_mask([LENGTH, 4]))
  assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out)))
  with pytest.raises(ValueError, match="dropout"):
    registry.build_mixer("h3", {}, dropout_rate=0.1)


# Incremental decoding (decode="recurrent"): models/attention/decoding.py's protocol. STATE = 6
# shift taps, fewer than the 13 tokens, so the shift window's roll-over is exercised.
@pytest.mark.parametrize("head_dim, disc", [(1, "zoh"), (2, "bilinear")])
def test_decoding_step_by_step_equals_the_causal_forward(head_dim, disc):
  from tests.sequence_decoding import assert_decodes
  module, variables = build(head_dim=head_dim, disc=disc)
  assert_decodes(module, variables["params"], inputs(5))


def test_decoding_state_does_not_grow_with_the_length():
  from tests.sequence_decoding import cache_shapes
  module, variables = build(head_dim=2)
  short, long = (cache_shapes(module, variables["params"], FEATURES, n) for n in (4, 16))
  assert short == long
  assert short["['shift_state']"] == (2, STATE, FEATURES)          # the last N inputs k
  assert short["['ssm_state']"] == (2, FEATURES // 2, 2, 2, STATE // 2)
