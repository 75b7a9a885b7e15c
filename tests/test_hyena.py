"""Hyena: the FFT module against a direct O(L^2) convolution sum in numpy, with the module's own
parameters and the implicit filter rebuilt here from the paper's formulas (sec. 3.3: window(t)
* FFN(PositionalEncoding(t))); both recurrences (paper, safari); causality; padding; dropout;
the filter's independence of the input length."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.hyena import Hyena, HyenaFilter, decay_rates, modulation_window, positional_embedding

LENGTH, FEATURES, MAX_LEN, WIDTH = 11, 4, 16, 8


def inputs(seed=0, batch=2, length=LENGTH, features=FEATURES):
  return np.random.default_rng(seed).standard_normal((batch, length, features)).astype(np.float32)


def lengths_mask(valid, length=LENGTH):
  return np.arange(length)[None, :] < np.array(valid)[:, None]


def random_params(module, x, seed=7):
  """Parameters drawn in numpy (shapes from jax.eval_shape; no compiled init), each off its
  init so that no term hides behind a 0 or a 1."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    noise = rng.standard_normal(leaf.shape)
    if "pos_emb_z" in name:
      value = positional_embedding(module.max_len, module.emb_dim)[0] + 0.1 * noise
    elif "sin_freq" in name:
      value = 1.0 + 0.3 * noise
    else:
      value = 0.5 * noise
    return value.astype(np.float32)

  return {"params": jax.tree_util.tree_map_with_path(draw, shapes)}


@functools.lru_cache(maxsize=None)
def _build(items):
  module = Hyena(**{"max_len": MAX_LEN, "filter_order": WIDTH, **dict(items)})
  return module, random_params(module, inputs())


def build(**kwargs):
  return _build(tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=None)
def jitted(module):
  return jax.jit(lambda variables, x, mask: module.apply(variables, x, mask))


def paper_filters(p, length, channels, module):
  """h(t) = Window(t) * FFN(z(t)) (Hyena sec. 3.3, Algorithm 2), written out in float64."""
  t = np.linspace(0.0, 1.0, module.max_len)[:length, None]
  f = p["filter"]
  h = f["pos_emb_z"][:length]
  for i in range(module.num_inner_mlps + 1):
    layer = f[f"filter_dense_{i}"]
    h = np.sin(f["sin_freq"] * (h @ layer["kernel"] + layer["bias"]))
  h = h @ f["filter_out"]["kernel"]
  if module.modulate:
    # the decay rate of channel c runs linearly from |log target| / slow to |log target| / fast
    alpha = np.abs(np.linspace(math.log(module.target) / module.slow_decay_pct,
                               math.log(module.target) / module.fast_decay_pct, channels))
    h = h * (np.exp(-alpha * t) + module.shift)
  if module.normalized:
    h = h / np.abs(h).sum(-1, keepdims=True)
  return h


def direct_conv(u, h, bias):
  """y[t] = sum_{s <= t} h[s] u[t - s] + bias u[t], an explicit double loop."""
  y = np.zeros_like(u)
  for t in range(u.shape[1]):
    for s in range(t + 1):
      y[:, t] += h[s] * u[:, t - s]
  return y + bias * u


def reference(params, x, mask, module):
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  keep = mask[:, :, None].astype(np.float64)
  x = x.astype(np.float64) * keep
  batch, length, d = x.shape
  order = module.order
  u = x @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]
  taps = module.short_filter_order
  w = p["short_filter_kernel"]
  short = np.zeros_like(u) + p["short_filter_bias"]
  for t in range(length):
    for j in range(taps):              # torch Conv1d, padding taps-1, first L outputs
      if 0 <= t - (taps - 1) + j:
        short[:, t] += w[j] * u[:, t - (taps - 1) + j]
  chunks = [short[..., i * d:(i + 1) * d] for i in range(order + 1)]
  n_filters = order if module.form == "paper" else order - 1
  h = paper_filters(p, length, d * n_filters, module).reshape(length, d, n_filters)
  bias = p["filter_bias_D"].reshape(d, n_filters) * (1.0 if module.filter_bias else 0.0)
  if module.form == "paper":           # Algorithm 3: x_1..x_N, v; v <- x_n (h_n * v)
    *xs, v = chunks
    for n in range(order):
      v = xs[n] * direct_conv(v * keep, h[:, :, n], bias[:, n])
  else:                                # safari HyenaOperator.forward
    *xs, v = chunks
    for o, x_i in enumerate(reversed(xs[1:])):
      v = direct_conv(v * x_i * keep, h[:, :, o], bias[:, o])
    v = v * xs[0]
  return v @ p["out_proj"]["kernel"] + p["out_proj"]["bias"]


CASES = [dict(), dict(form="paper"), dict(form="paper", order=3, emb_dim=5, shift=0.2),
         dict(form="safari", order=3, normalized=True, num_inner_mlps=1),
         dict(modulate=False, filter_bias=False, short_filter_order=2)]


@pytest.mark.parametrize("kwargs", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in
                                                                  kw.items()) or "default")
def test_matches_direct_convolution_reference(kwargs):
  module, variables = build(**kwargs)
  x, mask = inputs(1), lengths_mask([LENGTH, 7])
  out = jitted(module)(variables, x, mask)
  expected = reference(variables["params"], x, mask, module)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_window_is_the_papers_exponential_decay():
  """Sec. 3.3 / safari ExponentialModulation: window_c(t) = exp(-alpha_c t) + shift, where the
  fastest channel falls to `target` at t = fast_decay_pct and the slowest at slow_decay_pct."""
  deltas = decay_rates(5, fast_decay_pct=0.3, slow_decay_pct=1.5, target=1e-2)
  t = jnp.asarray([[0.0], [0.3], [1.5]])
  window = np.asarray(modulation_window(t, jnp.asarray(deltas), 0.0))
  np.testing.assert_allclose(window[0], 1.0)
  np.testing.assert_allclose(window[1, -1], 1e-2, rtol=1e-5)    # fastest: target at 0.3
  np.testing.assert_allclose(window[2, 0], 1e-2, rtol=1e-5)     # slowest: target at 1.5
  assert np.all(np.diff(window[1]) < 0)                         # rates increase over channels
  np.testing.assert_allclose(modulation_window(t, jnp.asarray(deltas), 0.25)[1],
                             window[1] + 0.25, rtol=1e-6)


def test_positional_embedding_and_length_independent_filters():
  z, t = positional_embedding(16, 5)
  np.testing.assert_allclose(t[:, 0], np.linspace(0, 1, 16), atol=1e-7)
  f = np.linspace(1e-4, 1, 2)                                   # bands = (5 - 1) // 2
  w = 2 * np.pi * np.arange(16)[:, None] / 16
  np.testing.assert_allclose(z, np.concatenate([t, np.cos(f * w), -np.sin(f * w)], -1),
                             atol=1e-6)
  module, variables = build(form="paper")
  filter_module = HyenaFilter(MAX_LEN, 2 * FEATURES, filter_order=WIDTH)
  filter_vars = {"params": variables["params"]["filter"]}
  filt = jax.jit(lambda n: filter_module.apply(filter_vars, n), static_argnums=0)
  np.testing.assert_allclose(filt(5), filt(MAX_LEN)[:5], atol=1e-6)   # built at max_len, sliced


def test_causal_no_leak_gradient_and_forward():
  module, variables = build(form="safari", order=3, normalized=True, num_inner_mlps=1)
  x, mask, t = inputs(2), lengths_mask([LENGTH, LENGTH]), 4
  grad = np.asarray(jax.jit(jax.grad(
      lambda x: module.apply(variables, x, mask)[0, t].sum()))(x))
  # FFT convolution at 2L: causal in exact arithmetic; float32 round-off (~1e-9) on the future.
  past = np.abs(grad[0, :t + 1]).max()
  assert past > 1e-3 and np.abs(grad[0, t + 1:]).max() <= 1e-6 * past
  changed = x.copy()
  changed[:, t + 1:] = inputs(3)[:, t + 1:]
  out, out2 = jitted(module)(variables, x, mask), jitted(module)(variables, changed, mask)
  scale = np.abs(np.asarray(out)).max()
  np.testing.assert_allclose(out2[:, :t + 1], out[:, :t + 1], atol=1e-6 * scale, rtol=0)
  assert np.abs(np.asarray(out2[:, t + 1:] - out[:, t + 1:])).max() > 1e-3 * scale


@pytest.mark.parametrize("form", ["paper", "safari"])
def test_padding_invariance(form):
  kwargs = {"form": form}
  module, variables = build(**kwargs)
  x = inputs(4)
  mask = lengths_mask([LENGTH, 6])
  mask[0, 2:4] = False                                          # a hole in the middle
  noisy = np.where(mask[:, :, None], x, 1e4 * inputs(5))
  out, out2 = jitted(module)(variables, x, mask), jitted(module)(variables, noisy, mask)
  np.testing.assert_allclose(np.where(mask[:, :, None], out2, 0),
                             np.where(mask[:, :, None], out, 0), atol=1e-5, rtol=1e-5)


def test_dropout_on_gated_values():
  module, variables = build(dropout_rate=0.5)
  x, mask = inputs(6), lengths_mask([LENGTH, 8])
  run = jax.jit(lambda key: module.apply(variables, x, mask, deterministic=False,
                                         rngs={"dropout": key}))
  a, a2, b = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(1))
  plain = jitted(module)(variables, x, mask)
  np.testing.assert_array_equal(a, a2)
  assert np.abs(np.asarray(a - plain)).max() > 1e-3 and np.abs(np.asarray(a - b)).max() > 1e-3


def test_initialisation():
  module = Hyena(max_len=MAX_LEN, filter_order=WIDTH, sine_freq=10.0, form="paper")
  params = jax.jit(module.init)(jax.random.PRNGKey(0), inputs())["params"]
  f = params["filter"]
  np.testing.assert_allclose(f["pos_emb_z"], positional_embedding(MAX_LEN, 3)[0])
  np.testing.assert_array_equal(f["sin_freq"], 10.0)            # Sin(w) shared by all layers
  assert f["filter_out"]["kernel"].shape == (WIDTH, 2 * FEATURES)   # order 2: 2 filters
  assert params["in_proj"]["kernel"].shape == (FEATURES, 3 * FEATURES)
  assert params["short_filter_kernel"].shape == (3, 3 * FEATURES)
  assert np.abs(params["short_filter_kernel"]).max() <= 1 / np.sqrt(3)  # Conv1d U(+-1/sqrt(3))
  assert "bias" not in f["filter_out"]


@pytest.mark.parametrize("kwargs,field", [
    ({"form": "fast"}, "form"), ({"order": 1}, "order"), ({"emb_dim": 4}, "emb_dim"),
    ({"max_len": None}, "max_len"), ({"max_len": 5}, "max_len"),
    ({"target": 2.0}, "target"), ({"short_filter_order": 0}, "short_filter_order")])
def test_bad_options_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    Hyena(**{"max_len": MAX_LEN, **kwargs}).init(jax.random.PRNGKey(0), inputs())


def test_registered_as_causal_sequence_mixer_bfloat16():
  spec = registry.get("hyena")
  assert spec.kind == "sequence" and spec.supports_causal and spec.needs_max_len
  mixer = registry.build_mixer("hyena", {"filter_order": WIDTH}, causal=True, max_len=MAX_LEN,
                               dropout_rate=0.1)
  assert mixer.max_len == MAX_LEN and mixer.dropout_rate == 0.1
  x = jnp.asarray(inputs(0), jnp.bfloat16)
  out = jax.jit(mixer.apply)(random_params(mixer, x), x, lengths_mask([LENGTH, 4]))
  assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out)))


# Incremental decoding (decode="history"): models/attention/decoding.py's protocol.
@pytest.mark.parametrize("kwargs", [dict(), dict(form="paper", order=3)])
def test_decoding_step_by_step_equals_the_causal_forward(kwargs):
  from tests.sequence_decoding import assert_decodes
  module, variables = build(**kwargs)
  assert_decodes(module, variables["params"], inputs(4))


def test_decoding_caches_one_history_per_long_convolution():
  """Each of the order-N recurrence's long convolutions keeps its own inputs `[b, L, D]` (grows
  with L, documented); the short conv keeps its last taps (constant)."""
  from tests.sequence_decoding import cache_shapes
  module, variables = build(form="paper", order=3)
  for length in (6, 12):
    shapes = cache_shapes(module, variables["params"], FEATURES, length)
    assert shapes["['history']"] == (3, 2, length, FEATURES)
    assert shapes["['short_window']"] == (2, 3, 4 * FEATURES)
