"""Long-Short Transformer: exact attention when the window covers the sequence and the rank is 0,
the joint softmax over [window; projected keys] against a dense reference, the dynamic
projection ignores padding, the module equals a numpy reading of eq. 3-5 with DualLN, appended
padding changes nothing, and the parameters and errors.

Inputs are numpy; the pure functions are jitted whole (op-by-op compiling dominates on CPU).
"""
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.long_short import dynamic_projection, long_short_attention
from models.attention.transformer import softmax_attention

HEADS, DIM, FEATURES = 2, 8, 12
exact_attention = jax.jit(softmax_attention)
joint = jax.jit(long_short_attention, static_argnames=("window",))


def qkv(seed, length=16, batch=2):
  rng = np.random.default_rng(seed)
  shape = (batch, length, HEADS, DIM)
  return [rng.standard_normal(shape).astype(np.float32) for _ in range(3)]


def padding_mask(valid, length=16):
  return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def reference(q, k, v, k_bar, v_bar, window, mask):
  """Eq. 5 per query: softmax over [K_bar; keys of its segment of `window` plus
  max(window // 2, 1) on each side], float64."""
  batch, length, _, depth = q.shape
  side = max(window // 2, 1)
  out = np.zeros(q.shape)
  for b in range(batch):
    for i in range(length):
      start = i // window * window
      keys = [j for j in range(length) if start - side <= j < start + window + side and mask[b, j]]
      scores = np.concatenate([np.einsum("hd,jhd->hj", q[b, i], k[b, keys]),
                               np.einsum("hd,rhd->hr", q[b, i], k_bar[b])], 1) / np.sqrt(depth)
      weights = np.exp(scores - scores.max(1, keepdims=True))
      weights /= weights.sum(1, keepdims=True)
      out[b, i] = np.einsum("hj,jhd->hd", weights, np.concatenate([v[b, keys], v_bar[b]]))
  return out * mask[:, :, None, None]


@pytest.mark.parametrize("window", [16, 40])
def test_window_covering_the_sequence_without_projection_is_exact(window):
  q, k, v = qkv(0)
  mask = padding_mask([11, 16])
  out = joint(q, k, v, window=window, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(out, exact_attention(q, k, v, q_mask=mask, kv_mask=mask),
                             atol=1e-5, rtol=0)


@pytest.mark.parametrize("window", [1, 4, 5])   # 3 keys; segments of 4 (+2 each side); ragged
def test_joint_softmax_equals_the_dense_reference(window):
  q, k, v = qkv(1)
  mask = padding_mask([11, 16])
  k_bar, v_bar = (np.random.default_rng(2).standard_normal((2, 3, HEADS, DIM)).astype(np.float32)
                  for _ in range(2))
  out = joint(q, k, v, k_bar, v_bar, window=window, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(out, reference(q, k, v, k_bar, v_bar, window, mask), atol=2e-5)


def test_dynamic_projection_is_a_softmax_over_real_positions():
  _, k, v = qkv(3)
  mask = padding_mask([11, 16])
  logits = np.random.default_rng(4).standard_normal((2, 16, HEADS, 3)).astype(np.float32)
  project = jax.jit(dynamic_projection)
  k_bar, v_bar = project(k, v, logits, mask)
  weights = np.exp(logits) * mask[:, :, None, None]
  weights /= weights.sum(1, keepdims=True)
  np.testing.assert_allclose(k_bar, np.einsum("blhr,blhd->brhd", weights, k), atol=1e-5)
  np.testing.assert_allclose(v_bar, np.einsum("blhr,blhd->brhd", weights, v), atol=1e-5)
  pad = ~mask[:, :, None, None]
  moved = project(np.where(pad, 1e4, k), np.where(pad, 1e4, v), np.where(pad, 1e4, logits), mask)
  np.testing.assert_allclose(moved[0], k_bar, atol=1e-5)
  np.testing.assert_allclose(moved[1], v_bar, atol=1e-5)


def layer_norm(x, params):
  """LayerNorm over the heads-concatenated features of [b, l, h, d] (float64)."""
  flat = x.reshape(*x.shape[:2], -1).astype(np.float64)
  mean, var = flat.mean(-1, keepdims=True), flat.var(-1, keepdims=True)
  normed = (flat - mean) / np.sqrt(var + 1e-6) * params["scale"] + params["bias"]
  return normed.reshape(x.shape)


def build(rank=3, window=4, **kwargs):
  mixer = registry.build_mixer("long_short", {"rank": rank, "window": window, **kwargs})
  rng = np.random.default_rng(5)
  q, k, v = qkv(6)
  x = rng.standard_normal((2, 16, FEATURES)).astype(np.float32)
  params = jax.jit(mixer.init)(jax.random.key(0), q, k, v, inputs_q=x)["params"]
  # non-trivial LayerNorm parameters, so the test sees which norm acts where
  params = jax.tree_util.tree_map(lambda p: p + 0.3 * rng.standard_normal(p.shape), params)
  apply = jax.jit(lambda q, k, v, x, mask: mixer.apply(
      {"params": params}, q, k, v, q_mask=mask, kv_mask=mask, inputs_q=x))
  return params, apply, (q, k, v, x)


def test_module_is_eq_3_to_5_with_dual_layer_norm():
  params, apply, (q, k, v, x) = build()
  mask = padding_mask([11, 16])
  out = apply(q, k, v, x, mask)
  k_loc, v_loc = layer_norm(k, params["local_norm"]), layer_norm(v, params["local_norm"])
  proj = params["projection"]
  logits = np.einsum("blf,fhr->blhr", x, proj["kernel"]) + proj["bias"]   # X W^P (eq. 3)
  weights = np.where(mask[:, :, None, None], np.exp(logits - logits.max(1, keepdims=True)), 0)
  weights /= weights.sum(1, keepdims=True)
  k_bar = layer_norm(np.einsum("blhr,blhd->brhd", weights, k_loc), params["global_norm"])
  v_bar = layer_norm(np.einsum("blhr,blhd->brhd", weights, v_loc), params["global_norm"])
  expected = reference(q, k_loc, v_loc, k_bar, v_bar, 4, mask)
  np.testing.assert_allclose(out, expected, atol=5e-5, rtol=1e-4)


def test_appended_padding_changes_nothing():
  _, apply, (q, k, v, x) = build(rank=2, window=3)
  mask = padding_mask([11, 16])
  noisy = [np.where(mask[..., None, None] if t.ndim == 4 else mask[..., None], t, 1e3)
           for t in (q, k, v, x)]
  out, clean = apply(*noisy, mask), apply(q, k, v, x, mask)
  np.testing.assert_allclose(out, clean, atol=1e-5, rtol=1e-5)
  assert np.all(np.asarray(out[0, 11:]) == 0.0)


def test_parameters_and_errors():
  params, _, (q, k, v, _) = build()
  assert params["projection"]["kernel"].shape == (FEATURES, HEADS, 3)
  assert set(params) == {"local_norm", "global_norm", "projection"}
  shapes = lambda kwargs: jax.eval_shape(registry.build_mixer("long_short", kwargs).init,
                                         jax.random.key(0), q, k, v)["params"]
  with pytest.raises(ValueError, match="inputs_q=None"):
    shapes({"rank": 3})
  assert shapes({"rank": 3, "project_from_inputs": False})["projection"].shape == (HEADS, DIM, 3)
  assert set(shapes({"rank": 0})) == {"local_norm"}
  with pytest.raises(ValueError, match="causal"):
    registry.build_mixer("long_short", {}, causal=True)
