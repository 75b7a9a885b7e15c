"""Linformer: exact in the k = n, E = F = I limit; sharing modes; max_len handling.

Inputs are numpy and computations are jitted whole (op-by-op compiling dominates on CPU).
"""
import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.linformer import linformer_attention as linformer_fn
from models.attention.transformer import softmax_attention

HEADS, DIM = 2, 8
linformer_attention = jax.jit(linformer_fn)


def qkv(seed, length=16, batch=2):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((batch, length, HEADS, DIM), np.float32) for _ in range(3)]


def init_apply(mixer, q, k, v):
  params = jax.jit(mixer.init)(jax.random.key(0), q, k, v)
  return params, jax.jit(mixer.apply)


def test_identity_projections_with_k_equal_length_are_exact():
  q, k, v = qkv(0)
  identity = np.eye(16, dtype=np.float32)[None]
  out = linformer_attention(q, k, v, identity, identity)
  np.testing.assert_allclose(out, jax.jit(softmax_attention)(q, k, v), atol=1e-5, rtol=1e-5)
  per_head = np.tile(identity, (HEADS, 1, 1))   # the per-head code path agrees
  np.testing.assert_allclose(linformer_attention(q, k, v, per_head, per_head), out, atol=1e-6)


@pytest.mark.parametrize("sharing,shapes", [
    ("none", {"E": (HEADS, 16, 4), "F": (HEADS, 16, 4)}),
    ("headwise", {"E": (1, 16, 4), "F": (1, 16, 4)}),
    ("key_value", {"E": (HEADS, 16, 4)}),
    ("layerwise", {"E": (1, 16, 4)}),
])
def test_sharing_modes_create_the_right_projections(sharing, shapes):
  q, k, v = qkv(1)
  mixer = registry.build_mixer("linformer", {"k": 4, "sharing": sharing}, max_len=16)
  params = jax.eval_shape(mixer.init, jax.random.key(0), q, k, v)["params"]   # no compile
  assert {name: p.shape for name, p in params.items()} == shapes


def test_key_value_sharing_means_e_equals_f():
  q, k, v = qkv(2)
  shared = registry.build_mixer("linformer", {"k": 4, "sharing": "key_value"}, max_len=16)
  separate = registry.build_mixer("linformer", {"k": 4, "sharing": "none"}, max_len=16)
  params, apply_shared = init_apply(shared, q, k, v)
  both = {"params": {"E": params["params"]["E"], "F": params["params"]["E"]}}
  np.testing.assert_allclose(apply_shared(params, q, k, v),
                             jax.jit(separate.apply)(both, q, k, v), atol=1e-6)


def test_shorter_inputs_use_the_first_columns_and_longer_fail():
  q, k, v = qkv(3, length=10)
  mixer = registry.build_mixer("linformer", {"k": 4}, max_len=16)
  params, apply = init_apply(mixer, q, k, v)
  e = np.asarray(params["params"]["E"])
  np.testing.assert_allclose(apply(params, q, k, v),
                             linformer_attention(q, k, v, e[:, :10], e[:, :10]), atol=1e-6)
  long = qkv(3, length=20)
  with pytest.raises(ValueError, match="20 keys but its projections cover 16"):
    jax.eval_shape(mixer.apply, params, *long)


def test_padding_is_zeroed_before_projection():
  q, k, v = qkv(4)
  mask = np.arange(16)[None, :] < np.array([[9], [16]])
  e = np.random.default_rng(5).standard_normal((1, 16, 4), np.float32)
  out = linformer_attention(q, k, v, e, e, q_mask=mask, kv_mask=mask)
  # Same as cutting the padded example to its 9 real tokens and the first 9 rows of E.
  short = linformer_attention(q[:1, :9], k[:1, :9], v[:1, :9], e[:, :9], e[:, :9])
  np.testing.assert_allclose(out[:1, :9], short, atol=1e-5)
  assert float(np.abs(out[0, 9:]).max()) == 0.0


def test_cross_attention_projects_over_kv_max_len():
  q = qkv(6, length=8)[0]
  _, k, v = qkv(7, length=24)
  mixer = registry.build_mixer("linformer", {"k": 4, "sharing": "none"}, cross=True,
                               max_len=8, kv_max_len=24)
  params = jax.eval_shape(mixer.init, jax.random.key(0), q, k, v)
  assert params["params"]["E"].shape == (HEADS, 24, 4)
  assert jax.eval_shape(mixer.apply, params, q, k, v).shape == q.shape


def test_bad_settings_are_errors():
  q, k, v = qkv(8)
  with pytest.raises(ValueError, match="sharing='rowwise'"):
    jax.eval_shape(registry.build_mixer("linformer", {"sharing": "rowwise"}, max_len=16).init,
                   jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="no causal form"):
    registry.build_mixer("linformer", {}, causal=True, max_len=16)
