"""Long convolutions: the FFT mixer against a direct numpy convolution loop (Squash and Smooth
written here from the paper's sec. 3.1 and the authors' AvgPool1d), fed the module's own
parameters; causality, padding, kernel dropout, the inits and the errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.long_conv import KERNEL_INITS

LENGTH, FEATURES, MAX_LEN = 12, 4, 16


def build(**kwargs):
  causal = kwargs.pop("causal", False)
  dropout_rate = kwargs.pop("dropout_rate", 0.0)
  max_len = kwargs.pop("max_len", MAX_LEN)
  return registry.build_mixer("long_conv", kwargs, causal=causal, dropout_rate=dropout_rate,
                              max_len=max_len)


def inputs(seed=0, batch=2, length=LENGTH, features=FEATURES):
  return np.random.default_rng(seed).standard_normal((batch, length, features)).astype(np.float32)


def lengths_mask(valid, length=LENGTH):
  return np.arange(length)[None, :] < np.array(valid)[:, None]


@functools.lru_cache(maxsize=None)
def variables(seed=0, **kwargs):
  mixer = build(**kwargs)
  return mixer, mixer.init(jax.random.PRNGKey(seed), inputs())


def regularised_kernel(kernel, lam, window):
  """Smooth (mean over `window` taps centred on each, zeros past the ends counted), then Squash
  (sign(k) max(|k| - lam, 0)), one tap at a time, float64."""
  kernel = np.asarray(kernel, np.float64)
  out = np.zeros_like(kernel)
  half = window // 2
  for index in np.ndindex(kernel.shape[:-1]):
    row = kernel[index]
    for l in range(row.shape[0]):
      value = row[max(l - half, 0):l + half + 1].sum() / window if window > 1 else row[l]
      out[index + (l,)] = np.sign(value) * max(abs(value) - lam, 0.0)
  return out


def reference(k, D, x, mask, bidirectional):
  """y_t = sum_{s<=t} k0[s] u_{t-s} + [sum_{s>=1} k1[s-1] u_{t+s}] + D u_t."""
  u = np.where(mask[..., None], x, 0.0).astype(np.float64)
  batch, length, features = u.shape
  y = np.zeros(u.shape)
  for t in range(length):
    for s in range(t + 1):
      y[:, t] += k[0, :, s] * u[:, t - s]
    if bidirectional:
      for s in range(1, length - t):
        y[:, t] += k[1, :, s - 1] * u[:, t + s]
  return y + np.asarray(D, np.float64) * u


CASES = [dict(bidirectional=False, smooth_window=0, kernel_init="random"),
         dict(bidirectional=True, smooth_window=3, kernel_init="double_exp"),
         dict(bidirectional=False, smooth_window=5, kernel_init="double_exp"),
         dict(bidirectional=True, smooth_window=0, kernel_init="random")]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda k: "-".join(map(str, k.values())))
def test_matches_direct_convolution_reference(kwargs):
  lam = 0.05
  mixer, v = variables(lam=lam, **kwargs)
  x, mask = inputs(1), lengths_mask([LENGTH, 7])
  # A trained-like kernel: some taps below lam (squashed to 0), some above.
  params = dict(v["params"])
  params["kernel"] = np.random.default_rng(2).standard_normal(params["kernel"].shape) * 0.1
  out = jax.jit(mixer.apply)({"params": params}, x, mask)
  k = regularised_kernel(params["kernel"], lam, kwargs["smooth_window"])
  assert 0 < np.mean(k == 0) < 1  # Squash did something, not everything
  expected = reference(k, params["D"], x, mask, kwargs["bidirectional"])
  np.testing.assert_allclose(np.where(mask[..., None], out, 0),
                             np.where(mask[..., None], expected, 0), atol=1e-5, rtol=1e-5)


def test_causal_no_leak_by_gradient_and_forward():
  mixer, v = variables(causal=True, lam=0.0)
  x = inputs(4)
  # Float32 FFT roundoff leaves ~1e-8 on the future (0 in exact arithmetic): bounded at 1e-6
  # of the past's gradient.
  for t in (0, 5, LENGTH - 2):
    grad = np.abs(np.asarray(jax.grad(lambda x: mixer.apply(v, x)[:, t].sum())(jnp.asarray(x))))
    assert grad[:, t + 1:].max() <= 1e-6 * grad[:, :t + 1].max(), t
    assert grad[:, :t + 1].max() > 0.1
  changed = x.copy()
  changed[:, 6:] = inputs(5)[:, 6:]
  np.testing.assert_allclose(mixer.apply(v, changed)[:, :6], mixer.apply(v, x)[:, :6],
                             atol=1e-6, rtol=1e-6)


def test_bidirectional_sees_the_future():
  mixer, v = variables(bidirectional=True, lam=0.0)
  grad = jax.grad(lambda x: mixer.apply(v, x)[:, 3].sum())(jnp.asarray(inputs(6)))
  assert np.all(np.abs(np.asarray(grad)[:, 4:]).sum(-1) > 0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_values_do_not_reach_real_outputs(bidirectional):
  mixer, v = variables(bidirectional=bidirectional, lam=0.0)
  x, mask = inputs(7), lengths_mask([5, 10])
  noisy = np.where(mask[..., None], x, 1e4 * inputs(8))
  out, out_noisy = (np.asarray(jax.jit(mixer.apply)(v, a, mask)) for a in (x, noisy))
  np.testing.assert_allclose(out_noisy[mask], out[mask], atol=1e-5, rtol=1e-5)


def test_kernel_dropout_drops_taps_and_rescales_the_rest():
  rate = 0.5
  mixer, v = variables(dropout_rate=rate, lam=0.0)
  impulse = np.zeros((1, LENGTH, FEATURES), np.float32)
  impulse[:, 0] = 1.0  # the output of an impulse is the kernel itself (plus D at t = 0)
  train = lambda seed: np.asarray(mixer.apply(v, impulse, deterministic=False,
                                              rngs={"dropout": jax.random.PRNGKey(seed)})[0])
  kernel = np.asarray(v["params"]["kernel"])[0, :, :LENGTH].T  # [L, H]
  D = np.asarray(v["params"]["D"])
  taps = train(0) - np.where(np.arange(LENGTH)[:, None] == 0, D, 0)
  kept = np.isclose(taps, kernel / (1 - rate), rtol=1e-4, atol=1e-7)
  dropped = np.abs(taps) < 1e-7
  assert np.all(kept | dropped) and 0.2 < dropped.mean() < 0.8
  assert not np.allclose(train(0), train(1))
  np.testing.assert_allclose(mixer.apply(v, impulse)[0], kernel + np.where(
      np.arange(LENGTH)[:, None] == 0, D, 0), rtol=1e-5, atol=1e-6)


def test_inits():
  mixer = build(max_len=4096)
  p = mixer.init(jax.random.PRNGKey(0), np.zeros((1, 4, 8), np.float32))["params"]
  assert p["kernel"].shape == (1, 8, 4096)
  assert abs(np.std(np.asarray(p["kernel"])) - 0.002) < 1e-4  # randn * 0.002
  assert abs(np.std(np.asarray(p["D"])) - 1.0) < 0.9  # randn(H)
  mixer = build(max_len=4096, kernel_init="double_exp", bidirectional=True)
  k = np.asarray(mixer.init(jax.random.PRNGKey(0), np.zeros((1, 4, 8), np.float32))
                 ["params"]["kernel"])
  assert k.shape == (2, 8, 4096)
  h, l = np.arange(8)[:, None], np.arange(4096)[None, :]
  envelope = np.exp(-(l / 4096) * (8 // 2) ** (h / 8))  # their double_exp: int(H / 2)^(h / H)
  assert abs(np.std(k / envelope) - 0.02) < 1e-3
  np.testing.assert_allclose(np.std(k[..., -512:], axis=(0, 2)) / 0.02, envelope[:, -256],
                             rtol=0.1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(causal=True, bidirectional=True), "causal=True and bidirectional=True"),
    (dict(kernel_init="zeros"), "kernel_init='zeros'"),
    (dict(smooth_window=4), "smooth_window=4"),
    (dict(lam=-0.1), "lam=-0.1"),
    (dict(max_len=8), "max_len=8"),
])
def test_bad_settings_are_errors(kwargs, message):
  mixer = build(**kwargs)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(mixer.init, jax.random.PRNGKey(0), inputs())


def test_needs_max_len():
  assert registry.get("long_conv").needs_max_len
  assert set(KERNEL_INITS) == {"random", "double_exp"}


def test_bfloat16_in_bfloat16_out_and_float32_parameters():
  mixer, v = variables(bidirectional=True, smooth_window=3)
  out = jax.jit(mixer.apply)(v, jnp.asarray(inputs(9), jnp.bfloat16), lengths_mask([4, 12]))
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out, np.float32)))
  assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(v))


# Incremental decoding (decode="history"): models/attention/decoding.py's protocol.
@pytest.mark.parametrize("kwargs", [dict(smooth_window=3, lam=0.1), dict(kernel_init="double_exp")])
def test_decoding_step_by_step_equals_the_causal_forward(kwargs):
  from tests.sequence_decoding import assert_decodes
  mixer, v = variables(causal=True, **kwargs)
  params = dict(v["params"])
  # Taps well above the squash threshold, so the kernel (not only D) carries the output.
  params["kernel"] = np.random.default_rng(2).standard_normal(params["kernel"].shape).astype(
      np.float32)
  assert_decodes(mixer, params, inputs(6))


def test_decoding_history_holds_the_past_inputs():
  """A "history" cache is `[b, L, H]`: it grows with L (documented), one row per token."""
  from tests.sequence_decoding import cache_shapes, decode_steps
  mixer, v = variables(causal=True)
  assert cache_shapes(mixer, v["params"], FEATURES, 8)["['history']"] == (2, 8, FEATURES)
  assert cache_shapes(mixer, v["params"], FEATURES, 16)["['history']"] == (2, 16, FEATURES)
  x = inputs(7, length=8)
  _, _, cache = decode_steps(mixer, v["params"], x)
  np.testing.assert_array_equal(np.asarray(cache["history"]), x)


def test_decoding_needs_the_causal_form():
  mixer = build()
  with pytest.raises(ValueError, match="causal"):
    mixer.init(jax.random.PRNGKey(0), inputs(), decode=True)
