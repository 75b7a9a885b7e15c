"""LRU (Orvieto et al. 2023): the parallel scan against a sequential loop written here with the
module's own parameters, the ring / phase / gamma / Glorot initialisation, causality, padding, and
option errors. Tiny sizes: length 16, features 6, state 8 (the init statistics use pure functions
or an init-only module)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.lru import nu_log_init, theta_log_init

LENGTH, FEATURES = 16, 6


def build(causal=False, **options):
  return registry.build_mixer("lru", {"state_size": 8, "r_min": 0.4, "r_max": 0.95, **options},
                              causal=causal)


def inputs(seed=0, batch=2, length=LENGTH, features=FEATURES):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, length, features)).astype(np.float32)


# Eager, not jitted (compiling costs more than computing at these sizes; one test runs jitted).
def init(module, features=FEATURES, seed=0):
  return module.lazy_init(jax.random.PRNGKey(seed),
                          jax.ShapeDtypeStruct((1, 1, features), jnp.float32))


def apply(module, variables, x, mask=None):
  return np.asarray(module.apply(variables, x, mask))


def padded_mask(batch=2, length=LENGTH):
  return np.arange(length)[None, :] < np.array([length - 5, length])[:batch, None]


def sequential_reference(params, u, mask, *, bidirectional=False):
  """LRU eq. 7-8 as a loop in complex128: x_k = lambda x_{k-1} + gamma (B u_k),
  y_k = Re(C x_k) + D u_k, lambda = exp(-exp(nu_log) + i exp(theta_log))."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
  b = np.exp(p["gamma_log"])[:, None] * (p["B_re"] + 1j * p["B_im"])
  u = np.where(mask[..., None], u, 0.0).astype(np.float64)
  readouts = [("C", range(u.shape[1]))]
  if bidirectional:
    readouts.append(("C2", range(u.shape[1] - 1, -1, -1)))
  y = np.zeros(u.shape)
  for name, steps in readouts:
    c = p[f"{name}_re"] + 1j * p[f"{name}_im"]
    for i in range(u.shape[0]):
      state = np.zeros(lam.shape, complex)
      for k in steps:
        state = lam * state + b @ u[i, k]
        y[i, k] += (c @ state).real
  return y + p["D"] * u


@pytest.mark.parametrize("options", [{}, {"bidirectional": True},
                                     {"r_min": 0.9, "r_max": 0.999, "max_phase": math.pi / 10}],
                         ids=["forward", "bidirectional", "pathx_ring"])
def test_matches_sequential_reference(options):
  module = build(**options)
  x, mask = inputs(), padded_mask()
  variables = init(module)
  out = apply(module, variables, x, mask)
  expected = sequential_reference(variables["params"], x, mask,
                                  bidirectional=options.get("bidirectional", False))
  np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_trained_gamma_is_used_not_recomputed():
  """gamma is a parameter (initialised to sqrt(1 - |lambda|^2), then trained): changing it
  changes the output as the reference says."""
  module = build()
  x, mask = inputs(1), padded_mask()
  params = dict(init(module)["params"])
  params["gamma_log"] = params["gamma_log"] + jnp.linspace(-1.0, 1.0, 8)
  np.testing.assert_allclose(apply(module, {"params": params}, x, mask)[mask],
                             sequential_reference(params, x, mask)[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("r_min, r_max, max_phase", [(0.4, 0.95, 2 * math.pi),
                                                     (0.999, 0.9999, math.pi / 10)])
def test_initialisation_follows_the_paper(r_min, r_max, max_phase):
  module = build(state_size=8, r_min=r_min, r_max=r_max, max_phase=max_phase)
  params = init(module, features=16)["params"]
  lam = np.exp(-np.exp(np.float64(params["nu_log"])) + 1j * np.exp(np.float64(params["theta_log"])))
  assert (np.abs(lam) >= r_min - 1e-6).all() and (np.abs(lam) <= r_max + 1e-6).all()
  theta = np.exp(np.float64(params["theta_log"]))  # the phase (np.angle would wrap at pi)
  assert (theta >= 0).all() and (theta <= max_phase + 1e-6).all()
  np.testing.assert_allclose(np.angle(lam), np.angle(np.exp(1j * theta)), atol=1e-9)
  np.testing.assert_allclose(np.exp(np.float64(params["gamma_log"])),
                             np.sqrt(1 - np.abs(lam) ** 2), rtol=1e-4)
  assert params["B_re"].shape == (8, 16) and params["C_re"].shape == (16, 8)
  assert params["D"].shape == (16,)


def test_ring_is_uniform_by_area_and_phase_uniform():
  """Lemma 3.2: |lambda|^2 ~ U[r_min^2, r_max^2]; theta ~ U[0, max_phase]."""
  r_min, r_max, max_phase, n = 0.5, 0.9, 1.0, 200_000
  nu = np.exp(np.float64(nu_log_init(jax.random.PRNGKey(1), (n,), r_min, r_max)))
  radius_sq = np.exp(-2 * nu)
  quantiles = np.quantile(radius_sq, [0.1, 0.5, 0.9])
  np.testing.assert_allclose(quantiles, r_min ** 2 + np.array([0.1, 0.5, 0.9]) *
                             (r_max ** 2 - r_min ** 2), atol=0.005)
  theta = np.exp(np.float64(theta_log_init(jax.random.PRNGKey(2), (n,), max_phase)))
  np.testing.assert_allclose(np.quantile(theta, [0.1, 0.5, 0.9]), [0.1, 0.5, 0.9], atol=0.01)


def test_glorot_scale_of_b_and_c():
  """App. A: B entries N(0, 1/(2H)) per part, C entries N(0, 1/N) per part, D ~ N(0, 1)."""
  h, n = 16, 256
  params = init(build(state_size=n), features=h)["params"]
  for name, variance in (("B_re", 1 / (2 * h)), ("B_im", 1 / (2 * h)),
                         ("C_re", 1 / n), ("C_im", 1 / n)):
    np.testing.assert_allclose(np.var(np.asarray(params[name])), variance, rtol=0.1)


def _jacobian_norms(module, variables, x, t):
  grad = jax.jacrev(lambda inp: module.apply(variables, inp)[0, t])(jnp.asarray(x[:1]))
  return np.abs(np.asarray(grad[:, 0])).sum(axis=(0, 2))


def test_causal_no_leak():
  module = build(causal=True)
  x = inputs(4)
  variables = init(module)
  t = 7
  norms = _jacobian_norms(module, variables, x, t)
  assert (norms[t + 1:] == 0).all() and norms[: t + 1].min() > 0
  changed = x.copy()
  changed[:, t + 1:] = np.random.default_rng(9).standard_normal(changed[:, t + 1:].shape) * 100
  np.testing.assert_allclose(apply(module, variables, changed)[:, : t + 1],
                             apply(module, variables, x)[:, : t + 1], atol=1e-6, rtol=0)


def test_bidirectional_sees_the_future():
  module = build(bidirectional=True)
  x = inputs(5)
  norms = _jacobian_norms(module, init(module), x, 7)
  assert norms[8:].min() > 0 and norms[:8].min() > 0


@pytest.mark.parametrize("mask_kind", ["end", "middle"])
def test_bidirectional_padding_invariance(mask_kind):
  module = build(bidirectional=True)
  x = inputs(6)
  if mask_kind == "end":
    mask = padded_mask()
  else:
    mask = np.ones((2, LENGTH), bool)
    mask[0, 3:7] = mask[1, 10:12] = False
  variables = init(module)
  noisy = np.where(mask[..., None], x,
                   np.random.default_rng(7).standard_normal(x.shape) * 1e4).astype(np.float32)
  np.testing.assert_allclose(apply(module, variables, noisy, mask)[mask],
                             apply(module, variables, x, mask)[mask], atol=1e-5, rtol=1e-5)


def test_jit_bfloat16_in_bfloat16_out_float32_params():
  module = build(bidirectional=True)
  x, mask = inputs(), padded_mask()
  variables = init(module)
  out = jax.jit(module.apply)(variables, jnp.asarray(x, jnp.bfloat16), mask)
  assert out.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  np.testing.assert_allclose(np.asarray(out, np.float32)[mask],
                             apply(module, variables, x, mask)[mask], atol=0.1, rtol=0.05)


@pytest.mark.parametrize("kwargs, causal, field", [
    ({"bidirectional": True}, True, "bidirectional"),
    ({"r_min": 0.9, "r_max": 0.5}, False, "r_min"),
    ({"r_max": 1.5}, False, "r_max"),
    ({"max_phase": 0.0}, False, "max_phase"),
    ({"state_size": 0}, False, "state_size"),
])
def test_bad_options_raise_naming_the_field(kwargs, causal, field):
  module = build(causal=causal, **kwargs)
  with pytest.raises(ValueError, match=field) as error:
    module.init(jax.random.PRNGKey(0), inputs(length=4))
  if causal:
    assert "causal" in str(error.value)


# Incremental decoding (decode="recurrent"): models/attention/decoding.py's protocol.
def test_decoding_step_by_step_equals_the_causal_forward():
  from tests.sequence_decoding import assert_decodes
  module = build(causal=True)
  x = inputs(length=12)
  assert_decodes(module, init(module)["params"], x)


def test_decoding_state_does_not_grow_with_the_length():
  from tests.sequence_decoding import cache_shapes
  module = build(causal=True)
  params = init(module)["params"]
  short, long = (cache_shapes(module, params, FEATURES, n) for n in (4, 16))
  assert short == long
  assert short["['state']"] == (2, 8)  # N complex states


def test_decoding_needs_the_causal_form():
  module = build(causal=False)
  with pytest.raises(ValueError, match="causal"):
    module.init(jax.random.PRNGKey(0), inputs(), decode=True)
