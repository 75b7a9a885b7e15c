"""AFT: AFT-simple and AFT-local against a dense O(L^2) reference of eq. 2 (with the band's w, eq.
3), causal and not, with padding; an empty window or w = 0 is AFT-simple; stable for large K
(the per-feature max, and the running max in the causal form); the module's parameters.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.aft import aft_attention

HEADS, DIM, LENGTH = 2, 4, 19   # 19: a partial last block of the band (blocks of >= 8)
aft = jax.jit(aft_attention, static_argnames=("window", "causal"))


def qkv(seed, batch=2):
  rng = np.random.default_rng(seed)
  return [2.0 * rng.standard_normal((batch, LENGTH, HEADS, DIM), np.float32) for _ in range(3)]


MASK = np.arange(LENGTH)[None, :] < np.array([[13], [LENGTH]])


def band(window, causal, seed=7):
  columns = window if causal else 2 * window - 1
  return 2.0 * np.random.default_rng(seed).standard_normal((LENGTH, columns)).astype(np.float32)


def dense_reference(q, k, v, w_band, mask, window, causal):
  """Eq. 2 with the full [T, T] w: w_{t,t'} from the band where |t - t'| < s, 0 elsewhere."""
  b, l, h, d = q.shape
  qf, kf, vf = (np.asarray(x, np.float64).reshape(b, l, h * d) for x in (q, k, v))
  w = np.zeros((l, l))
  for t in range(l):
    for u in range(l):
      if w_band is not None and abs(u - t) < window and (u <= t or not causal):
        w[t, u] = w_band[t, u - t + window - 1]
  allowed = mask[:, None, :] & (np.tril(np.ones((l, l), bool)) if causal else True)
  logits = np.where(allowed[..., None], kf[:, None] + w[None, :, :, None], -np.inf)
  weights = np.exp(logits - logits.max(2, keepdims=True))            # [b, t, t', F]
  y = (weights * vf[:, None]).sum(2) / weights.sum(2) / (1 + np.exp(-qf))
  return np.where(mask[:, :, None], y, 0.0).reshape(b, l, h, d)


@pytest.mark.parametrize("causal", [False, True])
def test_simple_matches_the_dense_reference(causal):
  q, k, v = qkv(0)
  out = aft(q, k, v, None, q_mask=MASK, kv_mask=MASK, causal=causal)
  np.testing.assert_allclose(out, dense_reference(q, k, v, None, MASK, 0, causal), atol=2e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 12])   # the diagonal; a band across blocks of 11
def test_local_matches_the_dense_reference(window, causal):
  q, k, v = qkv(1)
  w_band = band(window, causal)
  out = aft(q, k, v, w_band, q_mask=MASK, kv_mask=MASK, window=window, causal=causal)
  expected = dense_reference(q, k, v, w_band, MASK, window, causal)
  np.testing.assert_allclose(out, expected, atol=5e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_an_empty_window_or_zero_biases_is_aft_simple(causal):
  q, k, v = qkv(2)
  simple = aft(q, k, v, None, q_mask=MASK, kv_mask=MASK, causal=causal)
  empty = aft(q, k, v, band(1, causal), q_mask=MASK, kv_mask=MASK, window=0, causal=causal)
  zero = aft(q, k, v, 0.0 * band(5, causal), q_mask=MASK, kv_mask=MASK, window=5,
             causal=causal)
  np.testing.assert_array_equal(empty, simple)
  np.testing.assert_allclose(zero, simple, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_large_keys_are_stable(causal):
  """A per-feature shift of K changes nothing (eq. 2); a key far above the rest at position 16
  must not wipe out the earlier causal outputs (a running max, not the global one). (A jump of
  more than 80 within the query's own band block, here positions 8-15, would: see aft.py.)"""
  q, k, v = qkv(3)
  w_band = band(3, causal)
  run = lambda k: np.asarray(aft(q, k, v, w_band, q_mask=MASK, kv_mask=MASK, window=3,
                                 causal=causal))
  base = run(k)
  np.testing.assert_allclose(run(k + 500.0), base, atol=2e-5)
  spiked = k.copy()
  spiked[:, 16] += 200.0
  out = run(spiked)
  assert np.all(np.isfinite(out))
  if causal:
    np.testing.assert_allclose(out[:, :16], base[:, :16], atol=2e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_module_parameters_and_dtype(causal):
  q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in qkv(4))
  simple = registry.build_mixer("aft", {"mode": "simple"}, causal=causal, max_len=32)
  local = registry.build_mixer("aft", {"mode": "local", "window": 3}, causal=causal, max_len=32)
  assert simple.init(jax.random.key(0), q, k, v) == {}
  params = local.init(jax.random.key(0), q, k, v)
  w = params["params"]["position_bias"]
  assert w.shape == (32, 3 if causal else 5) and not np.any(w)   # zero init
  out_simple = simple.apply({}, q, k, v, q_mask=MASK, kv_mask=MASK)
  out_local = local.apply(params, q, k, v, q_mask=MASK, kv_mask=MASK)
  assert out_local.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out_local, np.float32),
                             np.asarray(out_simple, np.float32), atol=1e-2)
  assert np.all(np.asarray(out_local[0, 13:], np.float32) == 0.0)   # padded queries


def test_settings_are_checked():
  q, k, v = qkv(5)
  with pytest.raises(ValueError, match="mode='full'"):
    registry.build_mixer("aft", {"mode": "full"}, max_len=32).init(jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="max_len"):
    registry.build_mixer("aft", {}).init(jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="no attention dropout"):
    registry.build_mixer("aft", {}, max_len=32, dropout_rate=0.1)


# Incremental decoding: the causal sums as a running state (+ AFT-local's window of keys/values).
from tests import state_decoding  # noqa: E402  pylint: disable=wrong-import-position


def decode_aft(kwargs, q, k, v, max_len=16):
  mixer = registry.build_mixer("aft", kwargs, causal=True, max_len=max_len)
  heads = q.shape[2]
  repeat = lambda x: jnp.repeat(x, heads // x.shape[2], axis=2)
  variables = mixer.init(jax.random.key(0), q, repeat(k), repeat(v))
  if "params" in variables:   # random biases on the band (they start at 0: AFT-simple)
    bias = variables["params"]["position_bias"]
    variables = {"params": {"position_bias": jnp.asarray(
        np.random.default_rng(7).standard_normal(bias.shape), jnp.float32)}}
  full = mixer.apply(variables, q, repeat(k), repeat(v))
  cache = mixer.init(jax.random.key(0), q, k, v, decode=True)["cache"]

  def apply_step(cache, q_t, k_t, v_t):
    y, mutated = mixer.apply({**variables, "cache": cache}, q_t, k_t, v_t, decode=True,
                             mutable=["cache"])
    return y, mutated["cache"]

  stepped, cache = state_decoding.step_through(apply_step, cache, (q, k, v))
  return mixer, full, stepped, cache


@pytest.mark.parametrize("kwargs", [{"mode": "local", "window": 3}, {"mode": "simple"}])
def test_decoding_step_by_step_equals_the_causal_forward_with_a_constant_cache(kwargs):
  q, k, v = (2.0 * x for x in state_decoding.qkv(0, 13, heads=4, kv_heads=2, dim=4))
  mixer, full, stepped, cache = decode_aft(kwargs, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  state = ((2, 8), "float32")   # per key/value feature: 2 heads x 4
  expected = {"index": ((), "int32"), "running_max": state, "numerator": state,
              "denominator": state}
  if kwargs["mode"] == "local":   # the window: the last 3 keys and values, no more
    expected.update(keys=((2, 3, 2, 4), "float32"), values=((2, 3, 2, 4), "float32"))
  shapes = state_decoding.cache_shapes(cache)
  assert shapes == expected
  longer = mixer.init(jax.random.key(0), *state_decoding.qkv(1, 16, heads=4, kv_heads=2,
                                                               dim=4), decode=True)["cache"]
  assert state_decoding.cache_shapes(longer) == shapes


def test_decoding_through_the_base_with_grouped_heads():
  full, stepped, cache = state_decoding.attention_decode("aft", {"window": 3}, 11, rope=False)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["mixer"]["keys"].shape == (2, 3, 2, 4)


def test_decoding_in_bfloat16_keeps_the_dtype_and_a_float32_state():
  q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in state_decoding.qkv(2, 9, dim=4))
  _, full, stepped, cache = decode_aft({"mode": "local", "window": 3}, q, k, v)
  assert stepped.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(stepped)))
  assert cache["numerator"].dtype == jnp.float32 and cache["keys"].dtype == jnp.bfloat16
  np.testing.assert_allclose(np.float32(stepped), np.float32(full), atol=5e-2, rtol=5e-2)
