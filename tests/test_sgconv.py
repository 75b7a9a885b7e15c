"""SGConv: the multiscale kernel and the convolution against direct numpy loops fed the module's
own parameters (both directions, both interpolations), the fixed initial-norm normalisation,
causal no-leak, padding, initialisation and errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.sgconv import num_scales, upsample

LENGTH, FEATURES = 21, 6


def upsample_loop(w, factor, mode):
  """torch F.interpolate(scale_factor=factor, align_corners=False) written per output j."""
  n = w.shape[-1]
  out = np.zeros(w.shape[:-1] + (n * factor,))
  for j in range(n * factor):
    if mode == "nearest":
      out[..., j] = w[..., j // factor]
      continue
    src = max((j + 0.5) / factor - 0.5, 0.0)
    lo = int(math.floor(src))
    hi = min(lo + 1, n - 1)
    out[..., j] = w[..., lo] * (1 - (src - lo)) + w[..., hi] * (src - lo)
  return out


def test_upsample_is_torch_interpolate():
  w = jnp.array([0.0, 1.0, 2.0])
  # torch.nn.functional.interpolate(torch.tensor([[[0., 1., 2.]]]), scale_factor=2, mode=...)
  np.testing.assert_allclose(upsample(w, 2, "linear"), [0, 0.25, 0.75, 1.25, 1.75, 2.0])
  np.testing.assert_allclose(upsample(w, 2, "nearest"), [0, 0, 1, 1, 2, 2])
  rng = np.random.default_rng(0)
  w = rng.standard_normal((2, 3, 5))
  for mode in ("linear", "nearest"):
    np.testing.assert_allclose(upsample(jnp.float32(w), 4, mode), upsample_loop(w, 4, mode),
                               atol=1e-6)


def reference_kernel(params, interpolation, decay_min=2.0, decay_max=2.0):
  """Sec. 3.2: sub-kernel i upsampled to d 2^max(0, i-1), weighted m^(S-1-i), concatenated,
  divided by the stored initial norm; `[c, h, d 2^(S-1)]`."""
  count = len([k for k in params if k.startswith("kernel_") and k != "kernel_norm"])
  h = params["D"].shape[0]
  m = np.linspace(decay_min, decay_max, h)[:, None]
  pieces = [upsample_loop(np.asarray(params[f"kernel_{i}"], np.float64), 2 ** max(0, i - 1),
                          interpolation) * m ** (count - 1 - i) for i in range(count)]
  return np.concatenate(pieces, -1) / np.asarray(params["kernel_norm"], np.float64)


def reference_output(params, x, mask, interpolation="linear", bidirectional=False, **decay):
  """Direct convolution: y_t = sum_j K0_j u_{t-j} (+ sum_j K1_j u_{t+1+j}) + D u_t."""
  u = np.where(mask[..., None], x, 0.0) if mask is not None else x
  k = reference_kernel(params, interpolation, **decay)
  b, length, h = u.shape
  y = np.asarray(params["D"], np.float64) * u
  for t in range(length):
    for j in range(min(t + 1, k.shape[-1])):
      y[:, t] += k[0, :, j] * u[:, t - j]
    if bidirectional:
      for j in range(min(length - t - 1, k.shape[-1])):
        y[:, t] += k[1, :, j] * u[:, t + 1 + j]
  return y


def build(causal=False, max_len=LENGTH, **kwargs):
  return registry.build_mixer("sgconv", {"kernel_dim": 4, **kwargs}, causal=causal,
                              max_len=max_len)


def inputs(seed=0, valid=(LENGTH, 14)):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((len(valid), LENGTH, FEATURES)).astype(np.float32)
  return x, np.arange(LENGTH)[None, :] < np.array(valid)[:, None]


@pytest.mark.parametrize("kwargs", [
    dict(bidirectional=False, interpolation="linear"),
    dict(bidirectional=True, interpolation="nearest"),
    dict(bidirectional=True, interpolation="linear", decay_min=1.5, decay_max=3.0),
], ids=["uni-linear", "bi-nearest", "bi-linear-decays"])
def test_matches_direct_convolution(kwargs):
  x, mask = inputs()
  mixer = build(**kwargs)
  params = dict(mixer.init(jax.random.PRNGKey(0), x, mask)["params"])
  # The stored norm is the initial kernel's; perturbing the kernels afterwards keeps it.
  params["kernel_1"] = params["kernel_1"] * 1.7
  out = mixer.apply({"params": params}, x, mask)
  expected = reference_output(params, x, mask, **kwargs)
  np.testing.assert_allclose(np.asarray(out)[mask], expected[mask], atol=1e-5, rtol=1e-5)


def test_kernel_scales_decay_and_norm():
  x, mask = inputs()
  mixer = build(max_len=100, kernel_dim=8, bidirectional=True)
  params = mixer.init(jax.random.PRNGKey(1), x, mask)["params"]
  assert num_scales(100, 8) == 5 == len([k for k in params if k.startswith("kernel_")]) - 1
  assert 8 * 2 ** 4 >= 100 > 8 * 2 ** 3                  # the kernel covers max_len
  for i in range(5):
    assert params[f"kernel_{i}"].shape == (2, FEATURES, 8)
  k = reference_kernel(params, "linear") * np.asarray(params["kernel_norm"])
  np.testing.assert_allclose(np.linalg.norm(k, axis=-1, keepdims=True), params["kernel_norm"],
                             rtol=1e-5)                 # normalised to unit norm at init
  # Scale i covers [8 2^(i-1), 8 2^i): its values are sub-kernel i upsampled, times 2^(4-i).
  bounds = [0, 8, 16, 32, 64, 128]
  for i in range(5):
    piece = k[..., bounds[i]:bounds[i + 1]]
    np.testing.assert_allclose(piece, upsample_loop(np.asarray(params[f"kernel_{i}"]),
                                                    max(1, 2 ** (i - 1)), "linear") * 2.0 ** (4 - i),
                               rtol=1e-5, atol=1e-6)
  all_kernels = np.concatenate([np.ravel(params[f"kernel_{i}"]) for i in range(5)])
  assert abs(all_kernels.std() - 1.0) < 0.15 and abs(np.ravel(params["D"]).std() - 1) < 0.6


def test_kernel_norm_gets_no_gradient():
  x, mask = inputs()
  mixer = build()
  params = mixer.init(jax.random.PRNGKey(2), x, mask)["params"]
  grads = jax.grad(lambda p: mixer.apply({"params": p}, x, mask).sum())(params)
  assert np.all(np.asarray(grads["kernel_norm"]) == 0)
  assert np.abs(np.asarray(grads["kernel_0"])).sum() > 0


def test_causal_no_leak():
  x, _ = inputs(3, valid=(LENGTH,))
  mixer = build(causal=True)
  variables = mixer.init(jax.random.PRNGKey(3), x)
  apply = jax.jit(lambda x: mixer.apply(variables, x))
  t = 8
  grad = np.asarray(jax.grad(lambda x: apply(x)[0, t].sum())(jnp.asarray(x)))
  # Exact in exact arithmetic; float32 FFT round-off leaves ~1e-9 on the future.
  past = np.abs(grad[0, :t + 1]).max()
  assert past > 0.1 and np.abs(grad[0, t + 1:]).max() <= 1e-6 * past
  changed = x.copy()
  changed[:, t + 1:] = 3 * np.random.default_rng(4).standard_normal(changed[:, t + 1:].shape)
  np.testing.assert_allclose(apply(changed)[:, :t + 1], apply(x)[:, :t + 1], atol=1e-6)


def test_bidirectional_sees_future_and_ignores_padding():
  x, mask = inputs(5)
  mixer = build(bidirectional=True)
  variables = mixer.init(jax.random.PRNGKey(4), x, mask)
  apply = jax.jit(lambda x: mixer.apply(variables, x, mask))
  grad = np.asarray(jax.grad(lambda x: apply(x)[0, 3].sum())(jnp.asarray(x)))
  assert np.abs(grad[0, 4:]).max() > 1e-3
  noisy = np.where(mask[..., None], x, 1e4 * np.random.default_rng(6).standard_normal(x.shape))
  np.testing.assert_allclose(np.asarray(apply(noisy.astype(np.float32)))[mask],
                             np.asarray(apply(x))[mask], atol=1e-5, rtol=1e-5)


def test_bfloat16_and_inputs_longer_than_the_kernel():
  x, mask = inputs(7)
  mixer = build(max_len=8, kernel_dim=4)   # kernel covers 8 lags; the input has 21
  variables = mixer.init(jax.random.PRNGKey(5), x, mask)
  out = mixer.apply(variables, jnp.asarray(x, jnp.bfloat16), mask)
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out, np.float32)))
  expected = reference_output(variables["params"], x, mask)  # lags >= 8: zero kernel
  np.testing.assert_allclose(np.asarray(mixer.apply(variables, x, mask))[mask], expected[mask],
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs, field", [
    (dict(interpolation="cubic"), "interpolation"),
    (dict(kernel_dim=0), "kernel_dim"),
    (dict(decay_min=3.0, decay_max=2.0), "decay_min"),
])
def test_bad_settings_raise(kwargs, field):
  x, mask = inputs()
  with pytest.raises(ValueError, match=field):
    build(**kwargs).init(jax.random.PRNGKey(0), x, mask)


def test_causal_bidirectional_raises():
  x, mask = inputs()
  with pytest.raises(ValueError, match="causal.*bidirectional"):
    build(causal=True, bidirectional=True).init(jax.random.PRNGKey(0), x, mask)


# Incremental decoding (decode="history"): models/attention/decoding.py's protocol.
@pytest.mark.parametrize("max_len, length", [(None, 16), (LENGTH, 13)])
def test_decoding_step_by_step_equals_the_causal_forward(max_len, length):
  """max_len=None: the kernel's scales come from the cache's length L (the stepping calls see
  one token), as in the full forward over L."""
  from tests.sequence_decoding import assert_decodes
  module = build(causal=True, max_len=max_len)
  x = inputs(3)[0][:, :length]
  params = module.init(jax.random.PRNGKey(0), x)["params"]
  assert_decodes(module, params, x)


def test_decoding_history_is_the_length_of_the_cache():
  from tests.sequence_decoding import cache_shapes
  module = build(causal=True)
  params = module.init(jax.random.PRNGKey(0), inputs()[0])["params"]
  for length in (8, 16):
    assert cache_shapes(module, params, FEATURES, length)["['history']"] == (2, length, FEATURES)


def test_decoding_needs_the_causal_form():
  module = build()
  with pytest.raises(ValueError, match="causal"):
    module.init(jax.random.PRNGKey(0), inputs()[0], decode=True)
