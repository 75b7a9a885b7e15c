"""Mega: the EMA against a sequential loop, the whole layer against a numpy reference with
per-chunk dense attention (fed the module's own parameters), Mega-chunk with a chunk >= the
length equal to full attention, causal no-leak, padding, initialisation and errors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from models.attention import registry
from models.attention.mega import chunked_attention, ema

SMALL = dict(z_dim=8, hidden_dim=12, ndim=4)
LENGTH, FEATURES = 19, 16


def sigmoid(a):
  return 1.0 / (1.0 + np.exp(-a))


def silu(a):
  return a * sigmoid(a)


def ema_loop(u, delta, alpha, beta, gamma, bidirectional=False):
  """Sec. 3.1 eq. 3 as a recurrence per channel c and expansion dim n:
  h_t = p beta u_t + (1 - p a) h_{t-1}, y_t = sum_n gamma_n sqrt(1/ndim) h_t (p, a sigmoids);
  the backward direction (channels d..2d) runs the same recurrence from the end."""
  b, length, d = u.shape
  p, damp = sigmoid(delta), sigmoid(alpha)
  qq = 1.0 - p * damp
  out = np.zeros((b, length, d))
  scale = math.sqrt(1.0 / delta.shape[-1])

  def run(rows, times):
    h = np.zeros((b, d, delta.shape[-1]))
    for t in times:
      h = p[rows] * beta[rows] * u[:, t, :, None] + qq[rows] * h
      out[:, t] += (h * gamma[rows] * scale).sum(-1)

  run(slice(0, d), range(length))
  if bidirectional:
    run(slice(d, 2 * d), reversed(range(length)))
  return out


def ema_params(seed, channels, n):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((channels, n)) * s for s in (1.0, 1.0, 1.0, 1.0)]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_ema_matches_sequential_loop(bidirectional):
  rng = np.random.default_rng(0)
  u = rng.standard_normal((2, 23, 5))
  params = ema_params(1, 10 if bidirectional else 5, 3)
  out = jax.jit(ema, static_argnames=("bidirectional", "truncation"))(
      jnp.float32(u), *map(jnp.float32, params), bidirectional=bidirectional)
  np.testing.assert_allclose(out, ema_loop(u, *params, bidirectional), atol=1e-5, rtol=1e-5)


def test_ema_scan_equals_fft_and_loop():
  rng = np.random.default_rng(5)
  u = rng.standard_normal((2, 17, 4))
  params = ema_params(6, 4, 3)
  args = (jnp.float32(u), *map(jnp.float32, params))
  scan = ema(*args, scan=True)
  np.testing.assert_allclose(scan, ema_loop(u, *params), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(ema(*args, scan=True, truncation=5), ema(*args, truncation=5),
                             atol=1e-5, rtol=1e-5)


def test_ema_truncation_is_a_shorter_kernel():
  rng = np.random.default_rng(2)
  u = rng.standard_normal((1, 20, 3))
  delta, alpha, beta, gamma = ema_params(3, 3, 2)
  p, qq = sigmoid(delta), 1 - sigmoid(delta) * sigmoid(alpha)
  kernel = np.stack([(p * beta * gamma * qq ** j).sum(-1) / math.sqrt(2) for j in range(20)], -1)
  expected = np.zeros_like(u)
  for t in range(20):
    for j in range(min(t + 1, 6)):   # truncation 6: lags 0..5
      expected[:, t] += kernel[:, j] * u[:, t - j]
  out = ema(jnp.float32(u), *map(jnp.float32, (delta, alpha, beta, gamma)), truncation=6)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def attention_reference(q, k, v, mask, table, chunk, activation, causal):
  """Per-chunk dense attention, one query at a time (Mega-chunk, sec. 3.5; element_attention
  and softmax_attention of the authors' code), written from the formulas."""
  b, length, z = q.shape
  chunk = length if chunk <= 0 or chunk >= length else chunk
  positions = (len(table) + 1) // 2
  out = np.zeros((b, length, v.shape[-1]))
  for bi in range(b):
    for start in range(0, length, chunk):
      block = range(start, min(start + chunk, length))
      for i in block:
        keys = [j for j in block if mask[bi, j] and (not causal or j <= i)]
        if not keys:
          continue
        bias = np.array([table[positions - 1 + j - i] for j in keys])
        dots = np.array([q[bi, i] @ k[bi, j] for j in keys])
        if activation == "softmax":
          s = dots / math.sqrt(z) + bias
          w = np.exp(s - s.max())
          w = w / w.sum()
        else:
          s = dots / len(keys) + bias
          if activation == "laplace":
            w = 0.5 * (1 + erf((s - math.sqrt(0.5)) / (math.sqrt(0.25 / math.pi) * math.sqrt(2))))
          else:
            w = np.maximum(s, 0) ** 2
        out[bi, i] = (w[:, None] * v[bi, keys]).sum(0)
  return out


def layer_reference(params, x, mask, *, z_dim, hidden_dim, chunk_size, attention_activation,
                    bidirectional, causal, truncation=0, **_):
  """Eqs. 3, 7-10, 14-18 with the module's parameters; returns phi * (H - X)."""
  P = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  x = np.where(mask[..., None], x, 0.0)
  d = x.shape[-1]
  assert not truncation
  e = ema_loop(x, P["ema_delta"], P["ema_alpha"], P["ema_beta"], P["ema_gamma"], bidirectional)
  mx = silu(e + P["ema_omega"] * x)
  dense = lambda a, name: a @ P[name]["kernel"] + P[name]["bias"]
  v = silu(dense(x, "v_proj"))
  base = dense(mx, "mx_proj")
  u = sigmoid(base[..., :d])
  zr = silu(base[..., d:d + z_dim + hidden_dim])
  hx = base[..., d + z_dim + hidden_dim:]
  z, r = zr[..., :z_dim], zr[..., z_dim:]
  q = z * P["qk_gamma"][0] + P["qk_beta"][0]
  k = z * P["qk_gamma"][1] + P["qk_beta"][1]
  attended = attention_reference(q, k, v, mask, P["rel_pos_bias"], chunk_size,
                                 attention_activation, causal)
  h = silu(hx + dense(attended * r, "h_proj"))
  return u * (h - x)


def build(causal=False, **kwargs):
  return registry.build_mixer("mega", {**SMALL, **kwargs}, causal=causal, max_len=LENGTH)


def inputs(seed=0, valid=(LENGTH, 13)):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((len(valid), LENGTH, FEATURES)).astype(np.float32)
  mask = np.arange(LENGTH)[None, :] < np.array(valid)[:, None]
  return x, mask


def init_apply(mixer, x, mask, seed=0):
  """Random parameters in the module's tree (shapes by eval_shape: no init compile; the init
  itself is checked in test_initialisation), scaled so every term matters, and a jitted apply."""
  shapes = jax.eval_shape(mixer.init, jax.random.PRNGKey(seed), x, mask)["params"]
  rng = np.random.default_rng(seed)
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), jnp.float32), shapes)
  return params, jax.jit(lambda p, x, m: mixer.apply({"params": p}, x, m))


@functools.lru_cache(maxsize=None)
def prepared(items):
  """(params, jitted apply) for one setting, built once and shared by the tests (compiles are
  most of this file's time)."""
  case = dict(items)
  x, mask = inputs()
  return init_apply(build(**case), x, mask)


def key(case):
  return tuple(sorted(case.items()))


CASES = [
    dict(chunk_size=0, attention_activation="softmax", bidirectional=True),
    dict(chunk_size=5, attention_activation="laplace", bidirectional=True),
    dict(chunk_size=6, attention_activation="softmax", bidirectional=False, causal=True),
    dict(chunk_size=6, attention_activation="relu2", bidirectional=False, causal=True),
]


@pytest.mark.parametrize("case", CASES, ids=["full-softmax-bi", "chunk5-laplace-bi",
                                            "chunk6-softmax-causal", "chunk6-relu2-causal"])
def test_matches_numpy_reference(case):
  x, mask = inputs()
  params, apply = prepared(key(case))
  out = np.asarray(apply(params, x, mask))
  expected = layer_reference(params, x, mask, **SMALL, **{"causal": False, **case})
  np.testing.assert_allclose(np.where(mask[..., None], out, 0), np.where(mask[..., None],
                             expected, 0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("activation", ["softmax", "laplace"])
def test_chunk_at_least_length_is_full_attention(activation):
  rng = np.random.default_rng(4)
  q, k = rng.standard_normal((2, 2, 11, 4)).astype(np.float32)
  v = rng.standard_normal((2, 11, 3)).astype(np.float32)
  mask = np.arange(11)[None] < np.array([[11], [7]])
  table = rng.standard_normal(2 * 16 - 1).astype(np.float32)
  run = lambda chunk, causal: chunked_attention(q, k, v, mask, table, chunk_size=chunk,
                                                activation=activation, causal=causal)
  for causal in (False, True):
    np.testing.assert_array_equal(run(11, causal), run(0, causal))
    np.testing.assert_array_equal(run(16, causal), run(0, causal))
    assert not np.allclose(run(4, causal), run(0, causal))   # a real chunk changes the result


def test_module_chunk_of_the_length_is_full_attention():
  # chunk_size=length (bias table sized by the chunk) == full (table sized by max_len).
  x, xmask = inputs()
  params, apply_full = prepared(key(CASES[0]))
  _, apply_chunked = prepared(key({**CASES[0], "chunk_size": LENGTH}))
  np.testing.assert_array_equal(apply_chunked(params, x, xmask), apply_full(params, x, xmask))


def test_causal_no_leak():
  x, _ = inputs(6, valid=(LENGTH,))   # t = 9 lies inside the chunk [6, 12)
  params, apply = prepared(key(CASES[2]))
  t = 9
  grad = jax.grad(lambda x: apply(params, x, None)[0, t].sum())(jnp.asarray(x))
  # Exactly zero: the causal EMA is the scan (no FFT round-off), the attention masked.
  assert np.all(np.asarray(grad)[0, t + 1:] == 0.0)
  assert np.abs(np.asarray(grad)[0, :t + 1]).max() > 1e-3
  changed = x.copy()
  changed[:, t + 1:] = np.random.default_rng(7).standard_normal(changed[:, t + 1:].shape) * 10
  np.testing.assert_allclose(apply(params, changed, None)[:, :t + 1],
                             apply(params, x, None)[:, :t + 1], atol=1e-6, rtol=1e-6)


def test_bidirectional_sees_the_future():
  x, mask = inputs(8)
  params, apply = prepared(key(CASES[1]))   # chunks of 5
  grad = jax.grad(lambda x: apply(params, x, mask)[0, 3].sum())(jnp.asarray(x))
  assert np.abs(np.asarray(grad)[0, 4]).sum() > 0     # within the chunk: attention and EMA
  assert np.abs(np.asarray(grad)[0, 5:]).sum() > 0    # beyond the chunk: the backward EMA


def test_padding_invariance_bidirectional():
  x, mask = inputs(9)
  params, apply = prepared(key(CASES[1]))
  noisy = np.where(mask[..., None], x, np.random.default_rng(1).standard_normal(x.shape) * 1e4)
  out, out_noisy = apply(params, x, mask), apply(params, noisy.astype(np.float32), mask)
  np.testing.assert_allclose(np.asarray(out_noisy)[mask], np.asarray(out)[mask],
                             atol=1e-5, rtol=1e-5)


def test_initialisation():
  x, mask = inputs(10)
  mixer = registry.build_mixer("mega", dict(z_dim=8, hidden_dim=16, ndim=16, chunk_size=4,
                                            bidirectional=True), causal=False)
  params = mixer.init(jax.random.PRNGKey(3), x, mask)["params"]
  beta = np.asarray(params["ema_beta"])
  assert beta.shape == (2 * FEATURES, 16)            # two directions x ndim
  signs = np.where(np.arange(16) % 2 == 0, 1.0, -1.0)  # beta ~ [1, -1, 1, ...] + N(0, 0.02)
  assert np.abs(beta - signs).max() < 0.1 and 0.01 < (beta - signs).std() < 0.03
  for name, std in (("ema_delta", 0.2), ("ema_alpha", 0.2), ("ema_gamma", 1.0)):
    assert abs(np.asarray(params[name]).std() / std - 1) < 0.2, name
  assert params["ema_omega"].shape == (FEATURES,)
  assert abs(np.asarray(params["mx_proj"]["kernel"]).std() / 0.02 - 1) < 0.1
  np.testing.assert_array_equal(params["mx_proj"]["bias"], 0.0)
  np.testing.assert_array_equal(params["qk_beta"], 0.0)
  assert params["mx_proj"]["kernel"].shape == (FEATURES, 2 * FEATURES + 8 + 16)
  assert params["rel_pos_bias"].shape == (2 * 4 - 1,)   # sized by the chunk


def test_dropout_is_applied():
  x, mask = inputs(11)
  for field in ("dropout_rate", "hidden_dropout_rate"):
    mixer = build(chunk_size=0, **{field: 0.5})
    params, apply = init_apply(mixer, x, mask)
    train = jax.jit(lambda rng: mixer.apply({"params": params}, x, mask, deterministic=False,
                                            rngs={"dropout": rng}))
    run = lambda seed: train(jax.random.PRNGKey(seed))
    base = apply(params, x, mask)
    assert not np.allclose(run(0), base), field
    assert not np.allclose(run(0), run(1)), field
    np.testing.assert_array_equal(run(2), run(2))


@pytest.mark.parametrize("kwargs, field", [
    (dict(attention_activation="gelu"), "attention_activation"),
    (dict(chunk_size=-1), "chunk_size"),
    (dict(truncation=-2), "truncation"),
    (dict(z_dim=0), "z_dim"),
])
def test_bad_settings_raise(kwargs, field):
  x, mask = inputs()
  with pytest.raises(ValueError, match=field):
    build(**kwargs).init(jax.random.PRNGKey(0), x, mask)


def test_causal_bidirectional_raises():
  x, mask = inputs()
  with pytest.raises(ValueError, match="causal.*bidirectional"):
    build(causal=True, bidirectional=True).init(jax.random.PRNGKey(0), x, mask)


def test_bfloat16_and_longer_than_table():
  x, mask = inputs(12)
  mixer = build(chunk_size=4, bidirectional=True)
  params, apply = init_apply(mixer, x, mask)
  out = apply(params, jnp.asarray(x, jnp.bfloat16), mask)
  assert out.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(out, np.float32)))
  full = build(chunk_size=0)
  params, apply = init_apply(full, x, mask)
  longer = np.concatenate([x, x], axis=1)
  with pytest.raises(ValueError, match="max_len or chunk_size"):
    apply(params, longer, None)


# Incremental decoding (decode="window"): models/attention/decoding.py's protocol. 13 tokens in
# chunks of 6: the chunk cache wraps twice and the last chunk is partial.
DECODE_CASES = [dict(chunk_size=6, attention_activation="softmax"),
                dict(chunk_size=16, attention_activation="softmax"),   # one chunk, 16 slots
                dict(chunk_size=6, attention_activation="relu2", truncation=4),
                dict(chunk_size=0, attention_activation="laplace", truncation=20)]


@pytest.mark.parametrize("case", DECODE_CASES, ids=["chunk6-softmax", "chunk16-softmax",
                                                    "chunk6-relu2-trunc4",
                                                    "full-laplace-trunc20"])
def test_decoding_step_by_step_equals_the_causal_forward(case):
  from tests.sequence_decoding import assert_decodes
  mixer = build(causal=True, **case)
  x = inputs(5)[0][:, :13]
  params, _ = init_apply(mixer, x, None)
  assert_decodes(mixer, params, x)


def test_decoding_full_attention_table_sized_by_the_cache_length():
  """chunk_size=0 and no max_len: the position table is sized by the length at the cache's
  creation, which the one-token steps read back from the cache."""
  from tests.sequence_decoding import assert_decodes
  mixer = registry.build_mixer("mega", {**SMALL, "chunk_size": 0}, causal=True)
  x = inputs(6)[0][:, :9]
  params, _ = init_apply(mixer, x, None)
  assert_decodes(mixer, params, x)


def test_decoding_cache_is_bounded_by_the_chunk():
  from tests.sequence_decoding import cache_shapes
  mixer = build(causal=True, chunk_size=6, truncation=4)
  params, _ = init_apply(mixer, inputs()[0], None)
  short, long = (cache_shapes(mixer, params, FEATURES, n) for n in (4, 16))  # 4 < chunk
  assert short == long
  assert short["['chunk_keys']"] == (2, 6, SMALL["z_dim"])
  assert short["['chunk_values']"] == (2, 6, SMALL["hidden_dim"])
  assert short["['ema_state']"] == (2, FEATURES, SMALL["ndim"])
  assert short["['ema_inputs']"] == (2, 4, FEATURES)
