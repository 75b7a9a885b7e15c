"""S4D: the FFT-convolution mixer against a plain numpy loop over time (written here from the
paper's formulas, fed the module's own parameters), its recurrent form, causality, padding,
the S4D-Lin / S4D-Inv initialisations and its errors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.s4d import DISCS, INITS

LENGTH, FEATURES, STATE = 12, 4, 8


def build(**kwargs):
  kwargs = dict({"state_size": STATE}, **kwargs)
  causal = kwargs.pop("causal", False)
  return registry.build_mixer("s4d", kwargs, causal=causal)


def inputs(seed=0, batch=2, length=LENGTH, features=FEATURES):
  return np.random.default_rng(seed).standard_normal((batch, length, features)).astype(np.float32)


def lengths_mask(valid, length=LENGTH):
  return np.arange(length)[None, :] < np.array(valid)[:, None]


@functools.lru_cache(maxsize=None)
def variables(seed=0, **kwargs):
  mixer = build(**kwargs)
  return mixer, mixer.init(jax.random.PRNGKey(seed), inputs())


def reference(params, x, mask, disc, bidirectional):
  """Sec. 3: x_k = dA x_{k-1} + dB u_k, y_k = 2 Re(C x_k) + D u_k, one feature and one state
  at a time, float64; the backward direction z_k = dA z_{k+1} + dB u_{k+1} (S4 repo's FFTConv:
  lags -1..-(L-1) of the second kernel channel)."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  batch, length, features = x.shape
  half = p["A_im"].shape[1]
  copies = p["A_im"].shape[0]
  u = np.where(mask[..., None], x, 0.0).astype(np.float64)
  y = np.zeros((batch, length, features))
  for h in range(features):
    dt = math.exp(p["log_dt"][h])
    for n in range(half):
      a = -math.exp(p["log_A_re"][h % copies, n]) + 1j * p["A_im"][h % copies, n]
      b = p["B_re"][h % copies, n] + 1j * p["B_im"][h % copies, n]
      if disc == "zoh":
        dA = np.exp(dt * a)
        dB = (dA - 1) / a * b
      else:
        dA = (1 + dt * a / 2) / (1 - dt * a / 2)
        dB = dt * b / (1 - dt * a / 2)
      for bi in range(batch):
        c = p["C_re"][0, h, n] + 1j * p["C_im"][0, h, n]
        state = 0j
        for t in range(length):
          state = dA * state + dB * u[bi, t, h]
          y[bi, t, h] += 2 * (c * state).real
        if bidirectional:
          c = p["C_re"][1, h, n] + 1j * p["C_im"][1, h, n]
          state = 0j
          for t in reversed(range(length)):
            y[bi, t, h] += 2 * (c * state).real  # inputs t+1.. only
            state = dA * state + dB * u[bi, t, h]
  return y + p["D"] * u


# Every discretisation with and without the backward kernel; every init; n_ssm both ways.
CASES = [dict(disc="zoh", bidirectional=False, ssm_init="lin", n_ssm=None),
         dict(disc="zoh", bidirectional=True, ssm_init="inv", n_ssm=2),
         dict(disc="bilinear", bidirectional=False, ssm_init="inv", n_ssm=2),
         dict(disc="bilinear", bidirectional=True, ssm_init="legs", n_ssm=None)]
assert {c["disc"] for c in CASES} == set(DISCS) and {c["ssm_init"] for c in CASES} == set(INITS)


@pytest.mark.parametrize("kwargs", CASES, ids=lambda k: "-".join(map(str, k.values())))
def test_matches_sequential_reference(kwargs):
  mixer, v = variables(**kwargs)
  x, mask = inputs(1), lengths_mask([LENGTH, 7])
  # Train-like parameters: random B and A away from init, so every formula term matters.
  rng = np.random.default_rng(2)
  params = {k: np.asarray(p) + (0.3 * rng.standard_normal(p.shape) if k != "log_dt" else 0)
            for k, p in v["params"].items()}
  out = jax.jit(mixer.apply)({"params": params}, x, mask)
  expected = reference(params, x, mask, kwargs["disc"], kwargs["bidirectional"])
  np.testing.assert_allclose(np.where(mask[..., None], out, 0), np.where(mask[..., None],
                             expected, 0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fft_convolution_equals_recurrence(bidirectional):
  mixer, v = variables(bidirectional=bidirectional, disc="zoh", ssm_init="inv")
  x, mask = inputs(3), lengths_mask([9, LENGTH])
  fft = jax.jit(mixer.apply)(v, x, mask)
  recurrent = jax.jit(functools.partial(mixer.apply, method="recurrent"))(v, x, mask)
  np.testing.assert_allclose(fft, recurrent, atol=1e-5, rtol=1e-5)


def test_causal_no_leak_by_gradient_and_forward():
  mixer, v = variables(causal=True)
  x = inputs(4)

  def out_t(x, t):
    return mixer.apply(v, x)[:, t].sum()

  # An FFT convolution's future terms are zero in exact arithmetic but float32 roundoff of the
  # transforms leaves ~1e-8 (not exactly 0): bounded here at 1e-6 of the past's gradient.
  for t in (0, 5, LENGTH - 2):
    grad = np.abs(np.asarray(jax.grad(out_t)(jnp.asarray(x), t)))
    assert grad[:, t + 1:].max() <= 1e-6 * grad[:, :t + 1].max(), t
    assert grad[:, :t + 1].max() > 0.1
  changed = x.copy()
  changed[:, 6:] = inputs(5)[:, 6:]
  np.testing.assert_allclose(mixer.apply(v, changed)[:, :6], mixer.apply(v, x)[:, :6],
                             atol=1e-6, rtol=1e-6)


def test_bidirectional_sees_the_future():
  mixer, v = variables(bidirectional=True)
  grad = jax.grad(lambda x: mixer.apply(v, x)[:, 3].sum())(jnp.asarray(inputs(6)))
  assert np.all(np.abs(np.asarray(grad)[:, 4:]).sum(-1) > 0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_values_do_not_reach_real_outputs(bidirectional):
  mixer, v = variables(bidirectional=bidirectional)
  x, mask = inputs(7), lengths_mask([5, 10])
  noisy = np.where(mask[..., None], x, 1e4 * inputs(8))
  out, out_noisy = (np.asarray(jax.jit(mixer.apply)(v, a, mask)) for a in (x, noisy))
  np.testing.assert_allclose(out_noisy[mask], out[mask], atol=1e-5, rtol=1e-5)


def test_s4d_lin_and_inv_initialisation():
  _, v = variables(ssm_init="lin", dt_min=0.01, dt_max=0.05)
  p = {k: np.asarray(a) for k, a in v["params"].items()}
  n = np.arange(STATE // 2)
  np.testing.assert_allclose(-np.exp(p["log_A_re"]), -0.5 * np.ones((FEATURES, STATE // 2)),
                             rtol=1e-6)
  np.testing.assert_allclose(p["A_im"], np.tile(np.pi * n, (FEATURES, 1)), rtol=1e-6)  # eq. 7
  np.testing.assert_array_equal(p["B_re"], 1.0)
  np.testing.assert_array_equal(p["B_im"], 0.0)
  assert np.all(p["log_dt"] >= math.log(0.01)) and np.all(p["log_dt"] <= math.log(0.05))
  assert len(np.unique(p["log_dt"])) == FEATURES
  _, v = variables(ssm_init="inv")
  inv = STATE / np.pi * (STATE / (2 * n + 1) - 1)  # eq. 8
  np.testing.assert_allclose(np.asarray(v["params"]["A_im"]), np.tile(inv, (FEATURES, 1)),
                             rtol=1e-6)
  np.testing.assert_allclose(-np.exp(np.asarray(v["params"]["log_A_re"])), -0.5, rtol=1e-6)


def test_s4d_legs_is_the_diagonalised_normal_hippo_legs():
  """S4D-LegS: with C = c^T V, 2 Re(sum_n C_n exp(t A_n) B_n) = c^T expm(t S) B_legs for the
  normal part S = A_legs + P P^T of HiPPO-LegS (written here from the S4 paper, sec. 3.1)."""
  N = STATE
  n = np.arange(N)
  legs = -np.array([[np.sqrt((2 * i + 1) * (2 * j + 1)) if i > j else (i + 1 if i == j else 0)
                     for j in n] for i in n])
  S = legs + np.outer(np.sqrt(n + 0.5), np.sqrt(n + 0.5))
  np.testing.assert_allclose(S + S.T, -np.eye(N), atol=1e-12)  # -1/2 I + skew-symmetric
  B_legs = np.sqrt(2 * n + 1.0)
  _, v = variables(ssm_init="legs")
  p = {k: np.asarray(a, np.float64)[0] for k, a in v["params"].items() if k != "C_re"}
  A = -np.exp(p["log_A_re"]) + 1j * p["A_im"]
  B = p["B_re"] + 1j * p["B_im"]
  np.testing.assert_allclose(A.real, -0.5, rtol=1e-6)
  assert len(A) == N // 2 and np.all(A.imag < 0)  # one of each conjugate pair
  eigenvalues, V = np.linalg.eig(S)
  keep = [np.argmin(np.abs(eigenvalues - a)) for a in A]
  np.testing.assert_allclose(eigenvalues[keep], A, rtol=1e-5, atol=1e-5)
  c = np.random.default_rng(0).standard_normal(N)
  C = c @ V[:, keep]
  for t in (0.0, 0.3, 2.0):
    w, U = np.linalg.eigh(1j * (S + 0.5 * np.eye(N)))  # expm of a normal matrix, no scipy
    expm = np.exp(-0.5 * t) * (U @ np.diag(np.exp(-1j * t * w)) @ U.conj().T)
    np.testing.assert_allclose(2 * (C * np.exp(t * A) * B).sum().real, (c @ expm @ B_legs).real,
                               rtol=1e-4, atol=1e-4)


def test_c_is_complex_standard_normal():
  mixer = registry.build_mixer("s4d", {"state_size": 64})
  p = mixer.init(jax.random.PRNGKey(0), 16, method="ssm")["params"]  # parameters only
  c = np.asarray(p["C_re"]) + 1j * np.asarray(p["C_im"])
  assert abs(np.mean(np.abs(c) ** 2) - 1.0) < 0.15  # E|C|^2 = 1 (torch.randn(cfloat))
  assert abs(np.var(np.asarray(p["C_re"])) - 0.5) < 0.1


def test_bfloat16_in_bfloat16_out_and_float32_parameters():
  mixer, v = variables(bidirectional=True)
  out = jax.jit(mixer.apply)(v, jnp.asarray(inputs(9), jnp.bfloat16), lengths_mask([4, 12]))
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out, np.float32)))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v))


@pytest.mark.parametrize("kwargs, message", [
    (dict(causal=True, bidirectional=True), "causal=True and bidirectional=True"),
    (dict(ssm_init="hippo"), "ssm_init='hippo'"),
    (dict(disc="euler"), "disc='euler'"),
    (dict(state_size=7), "state_size=7"),
    (dict(dt_min=0.2, dt_max=0.1), "dt_min=0.2"),
    (dict(n_ssm=3), "n_ssm=3"),
])
def test_bad_settings_are_errors(kwargs, message):
  mixer = build(**kwargs)
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    jax.eval_shape(mixer.init, jax.random.PRNGKey(0), inputs())


# Incremental decoding (decode="recurrent"): models/attention/decoding.py's protocol.
@pytest.mark.parametrize("kwargs", [{}, dict(disc="bilinear", ssm_init="legs", n_ssm=2)])
def test_decoding_step_by_step_equals_the_causal_forward(kwargs):
  from tests.sequence_decoding import assert_decodes
  mixer, v = variables(causal=True, **kwargs)
  assert_decodes(mixer, v["params"], inputs(3))


def test_decoding_state_does_not_grow_with_the_length():
  from tests.sequence_decoding import cache_shapes
  mixer, v = variables(causal=True)
  short, long = (cache_shapes(mixer, v["params"], FEATURES, n) for n in (4, 16))
  assert short == long and short["['state']"] == (2, FEATURES, STATE // 2)


def test_decoding_through_the_shared_base():
  """MultiHeadAttention's decode path for a sequence mixer (models/attention/base.py)."""
  from models.attention.base import MultiHeadAttention
  from tests.sequence_decoding import assert_decodes
  layer = MultiHeadAttention(num_heads=2, qkv_dim=FEATURES, attention="s4d", causal=True,
                             attention_kwargs={"state_size": STATE})
  x = inputs(4)
  params = layer.init(jax.random.PRNGKey(1), x)["params"]
  assert_decodes(layer, params, x)


def test_decoding_needs_the_unidirectional_form():
  mixer = build(bidirectional=True)
  with pytest.raises(ValueError, match="causal"):
    mixer.init(jax.random.PRNGKey(0), inputs(), decode=True)
