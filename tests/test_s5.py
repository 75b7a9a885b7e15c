"""S5 (Smith et al. 2023): the parallel-scan layer against a sequential loop written here with the
module's own parameters, HiPPO-N and the block / conjugate-symmetric initialisation, causality,
padding, and option errors. Tiny sizes: length <= 24, features 6, state <= 8."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from models.attention import registry
from models.attention.s5 import hippo_n, s5_init

LENGTH, FEATURES = 16, 6


def build(causal=False, **options):
  return registry.build_mixer("s5", {"state_size": 8, "blocks": 2, **options}, causal=causal)


def inputs(seed=0, batch=2, length=LENGTH):
  rng = np.random.default_rng(seed)
  return rng.standard_normal((batch, length, FEATURES)).astype(np.float32)


# Eager, not jitted: at these sizes compiling the whole layer costs seconds per option set,
# while eager ops are compiled once per shape and shared by every test (one test runs jitted).
def init(module, x, seed=0):
  """The parameters do not depend on the length: initialise from a shape, computing nothing
  but the variables."""
  return module.lazy_init(jax.random.PRNGKey(seed),
                          jax.ShapeDtypeStruct((1, 1, x.shape[-1]), jnp.float32))


def apply(module, variables, x, mask=None):
  return np.asarray(module.apply(variables, x, mask))


def sequential_reference(params, u, mask, *, conj_sym=True, discretization="zoh",
                         clip_eigs=False, bidirectional=False, step_rescale=1.0):
  """S5 written as a loop over time in complex128 (sec. 2-3, eq. 6 and App. A)."""
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  lam_re = np.minimum(p["Lambda_re"], -1e-4) if clip_eigs else p["Lambda_re"]
  lam = lam_re + 1j * p["Lambda_im"]
  delta = step_rescale * np.exp(p["log_step"])
  b = p["B"][..., 0] + 1j * p["B"][..., 1]
  if discretization == "zoh":
    lam_bar = np.exp(lam * delta)
    b_bar = ((lam_bar - 1) / lam)[:, None] * b
  else:
    lam_bar = (1 + delta / 2 * lam) / (1 - delta / 2 * lam)
    b_bar = (delta / (1 - delta / 2 * lam))[:, None] * b
  u = np.where(mask[..., None], u, 0.0).astype(np.float64)
  readouts = [("C", range(u.shape[1]))]
  if bidirectional:
    readouts.append(("C2", range(u.shape[1] - 1, -1, -1)))
  y = np.zeros(u.shape)
  for name, steps in readouts:
    c = p[name][..., 0] + 1j * p[name][..., 1]
    for i in range(u.shape[0]):
      state = np.zeros(lam.shape, complex)
      for k in steps:
        state = lam_bar * state + b_bar @ u[i, k]
        y[i, k] += (c @ state).real * (2.0 if conj_sym else 1.0)
  return y + p["D"] * u


def padded_mask(batch=2, length=LENGTH):
  return np.arange(length)[None, :] < np.array([length - 5, length])[:batch, None]


CASES = [
    {},
    {"bidirectional": True},
    {"bidirectional": True, "conj_sym": False, "discretization": "bilinear"},
    {"clip_eigs": True},
    {"c_init": "complex_normal", "step_rescale": 2.5, "blocks": 1},
    {"c_init": "lecun_normal", "dt_min": 0.01, "dt_max": 0.5},
]


@pytest.mark.parametrize("options", CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_matches_sequential_reference(options):
  module = build(**options)
  x, mask = inputs(), padded_mask()
  variables = init(module, x)
  if options.get("clip_eigs"):  # put some eigenvalues in the right half plane: clipping acts
    params = dict(variables["params"])
    params["Lambda_re"] = params["Lambda_re"].at[::2].set(0.3)
    variables = {"params": params}
  out = apply(module, variables, x, mask)
  reference_options = {k: v for k, v in options.items()
                       if k not in ("c_init", "blocks", "dt_min", "dt_max")}
  expected = sequential_reference(variables["params"], x, mask, **reference_options)
  np.testing.assert_allclose(out[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_hippo_n_is_the_normal_part_of_legs_and_its_eigendecomposition():
  n = 8
  lam, v, normal = hippo_n(n)
  # LegS (HiPPO, Gu et al. 2020) written elementwise; p_n = sqrt(n + 1/2) (S5 App. B.1.1).
  legs = np.array([[-np.sqrt((2 * i + 1) * (2 * j + 1)) if i > j else (-(i + 1) if i == j else 0)
                    for j in range(n)] for i in range(n)])
  p = np.sqrt(np.arange(n) + 0.5)
  np.testing.assert_allclose(normal, legs + np.outer(p, p), atol=1e-12)
  np.testing.assert_allclose(normal + normal.T, -np.eye(n), atol=1e-12)  # -I/2 + skew
  np.testing.assert_allclose(lam.real, -0.5, atol=1e-12)
  np.testing.assert_allclose(v.conj().T @ v, np.eye(n), atol=1e-10)  # unitary
  np.testing.assert_allclose(v @ np.diag(lam) @ v.conj().T, normal, atol=1e-10)
  np.testing.assert_allclose(np.sort(lam.imag), np.sort(np.linalg.eigvals(normal).imag),
                             atol=1e-9)
  assert (lam.imag[: n // 2] < 0).all()
  np.testing.assert_allclose(lam[: n // 2], np.conj(lam[n // 2:][::-1]), atol=1e-10)


@pytest.mark.parametrize("conj_sym", [True, False])
def test_block_diagonal_initialisation(conj_sym):
  state, blocks = 8, 2
  module = build(state_size=state, blocks=blocks, conj_sym=conj_sym, dt_min=0.002, dt_max=0.05)
  params = init(module, inputs())["params"]
  block_lam, block_v, _ = hippo_n(state // blocks)
  kept = state // blocks // 2 if conj_sym else state // blocks
  np.testing.assert_allclose(params["Lambda_re"], -0.5, atol=1e-7)
  np.testing.assert_allclose(params["Lambda_im"], np.tile(block_lam.imag[:kept], blocks),
                             rtol=1e-6)
  lam, v = s5_init(state, blocks, conj_sym)
  assert v.shape == (state, kept * blocks)
  np.testing.assert_allclose(v[: state // blocks, kept:], 0)  # block-diagonal
  np.testing.assert_allclose(v[state // blocks:, :kept], 0)
  b = np.asarray(params["B"][..., 0] + 1j * params["B"][..., 1], np.complex128)
  c = np.asarray(params["C"][..., 0] + 1j * params["C"][..., 1], np.complex128)
  if not conj_sym:  # B~ = V^{-1} B and C~ = C V with real B, C: V B~ and C~ V^* are real
    assert np.abs((v @ b).imag).max() < 1e-5 < np.abs((v @ b).real).max()
  # C is drawn complex (trunc_standard_normal: each part lecun-normal over P, variance 1/P),
  # then C~ = C V; V is unitary, so C~ V^* gives C back.
  c_back = c @ v.conj().T
  assert c_back.shape == (FEATURES, state)
  for part in (c_back.real, c_back.imag):
    assert 0.5 / state < np.mean(part ** 2) < 2.0 / state
  log_step = np.asarray(params["log_step"])
  assert log_step.shape == (kept * blocks,)
  assert (log_step >= np.log(0.002) - 1e-6).all() and (log_step <= np.log(0.05) + 1e-6).all()


def test_conjugate_symmetric_layer_is_the_real_block_diagonal_hippo_n_system():
  """With real B, C mapped to B~ = V^* B, C~ = C V (half the eigenbasis) and one Delta, the
  conjugate-symmetric layer equals the real system x_k = expm(S Delta) x_{k-1} +
  S^{-1}(expm(S Delta) - I) B u_k, y = C x + D u over the block-diagonal normal matrix S."""
  state, blocks, delta = 8, 2, 0.3
  module = build(state_size=state, blocks=blocks)
  x, mask = inputs(3), padded_mask()
  params = dict(init(module, x)["params"])
  _, v = s5_init(state, blocks, True)
  rng = np.random.default_rng(1)
  b_real = rng.standard_normal((state, FEATURES)) / 3
  c_real = rng.standard_normal((FEATURES, state)) / 3
  b_tilde, c_tilde = v.conj().T @ b_real, c_real @ v
  params["B"] = jnp.asarray(np.stack([b_tilde.real, b_tilde.imag], -1), jnp.float32)
  params["C"] = jnp.asarray(np.stack([c_tilde.real, c_tilde.imag], -1), jnp.float32)
  params["log_step"] = jnp.full_like(params["log_step"], np.log(delta))
  out = apply(module, {"params": params}, x, mask)
  s = scipy.linalg.block_diag(*[hippo_n(state // blocks)[2]] * blocks)
  a_bar = scipy.linalg.expm(s * delta)
  b_bar = np.linalg.solve(s, a_bar - np.eye(state)) @ b_real
  u = np.where(mask[..., None], x, 0.0).astype(np.float64)
  expected = np.zeros_like(u)
  for i in range(u.shape[0]):
    h = np.zeros(state)
    for k in range(u.shape[1]):
      h = a_bar @ h + b_bar @ u[i, k]
      expected[i, k] = c_real @ h
  expected += np.asarray(params["D"], np.float64) * u
  np.testing.assert_allclose(out[mask], expected[mask], atol=2e-5, rtol=1e-4)


def _jacobian_norms(module, variables, x, t):
  """|d out[0, t] / d x[0, s]| summed over features, for every s."""
  grad = jax.jacrev(lambda inp: module.apply(variables, inp)[0, t])(jnp.asarray(x[:1]))
  return np.abs(np.asarray(grad[:, 0])).sum(axis=(0, 2))


def test_causal_no_leak():
  module = build(causal=True)
  x = inputs(4)
  variables = init(module, x)
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
  norms = _jacobian_norms(module, init(module, x), x, 7)
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
  variables = init(module, x)
  noisy = np.where(mask[..., None], x,
                   np.random.default_rng(7).standard_normal(x.shape) * 1e4).astype(np.float32)
  np.testing.assert_allclose(apply(module, variables, noisy, mask)[mask],
                             apply(module, variables, x, mask)[mask], atol=1e-5, rtol=1e-5)


def test_jit_bfloat16_in_bfloat16_out_float32_params():
  module = build(bidirectional=True)
  x = inputs()
  variables = init(module, x)
  out = jax.jit(module.apply)(variables, jnp.asarray(x, jnp.bfloat16), padded_mask())
  assert out.dtype == jnp.bfloat16 and np.isfinite(np.asarray(out, np.float32)).all()
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
  np.testing.assert_allclose(np.asarray(out, np.float32)[padded_mask()],
                             apply(module, variables, x, padded_mask())[padded_mask()],
                             atol=0.1, rtol=0.05)


@pytest.mark.parametrize("kwargs, causal, field", [
    ({"bidirectional": True}, True, "bidirectional"),
    ({"discretization": "euler"}, False, "discretization"),
    ({"c_init": "xavier"}, False, "c_init"),
    ({"state_size": 8, "blocks": 3}, False, "blocks"),
    ({"state_size": 6, "blocks": 2}, False, "conj_sym"),
    ({"dt_min": 0.2, "dt_max": 0.1}, False, "dt_min"),
    ({"step_rescale": 0.0}, False, "step_rescale"),
])
def test_bad_options_raise_naming_the_field(kwargs, causal, field):
  module = build(causal=causal, **kwargs)
  with pytest.raises(ValueError, match=field) as error:
    module.init(jax.random.PRNGKey(0), inputs(length=4))
  if causal:
    assert "causal" in str(error.value)


# Incremental decoding (decode="recurrent"): models/attention/decoding.py's protocol.
@pytest.mark.parametrize("options", [{}, {"conj_sym": False, "discretization": "bilinear"}])
def test_decoding_step_by_step_equals_the_causal_forward(options):
  from tests.sequence_decoding import assert_decodes
  module = build(causal=True, **options)
  x = inputs(length=12)
  assert_decodes(module, init(module, x)["params"], x)


def test_decoding_state_does_not_grow_with_the_length():
  from tests.sequence_decoding import cache_shapes
  module = build(causal=True)
  params = init(module, inputs())["params"]
  short, long = (cache_shapes(module, params, FEATURES, n) for n in (4, 16))
  assert short == long
  assert short["['state']"] == (2, 4)  # P/2 complex states (conj_sym), P = 8


def test_decoding_needs_the_causal_form():
  module = build(causal=False)
  with pytest.raises(ValueError, match="causal"):
    module.init(jax.random.PRNGKey(0), inputs(), decode=True)
