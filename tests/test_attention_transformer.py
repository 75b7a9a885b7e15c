"""Exact attention's implementations agree: dense, blocked (linear memory) and XLA's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry, transformer
from models.attention.blocked_softmax import blocked_softmax_attention
from models.attention.transformer import softmax_attention


def inputs(lq=37, lk=37, seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], (2, lq, 2, 8))
  k, v = (jax.random.normal(key, (2, lk, 2, 8)) for key in keys[1:])
  q_mask = jnp.arange(lq)[None] < jnp.array([[lq], [lq - 9]])
  kv_mask = jnp.arange(lk)[None] < jnp.array([[lk], [lk - 9]])
  return q, k, v, q_mask, kv_mask


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lq,lk,block_q,block_k", [
    (37, 37, 8, 8), (37, 37, 64, 64), (16, 40, 8, 8),
    (37, 37, 4, 16), (37, 37, 16, 4), (16, 40, 16, 3)])  # causal: whole future blocks skipped
def test_blocked_matches_dense_outputs_and_gradients(causal, lq, lk, block_q, block_k):
  q, k, v, q_mask, kv_mask = inputs(lq, lk)
  dense = functools.partial(softmax_attention, q_mask=q_mask, kv_mask=kv_mask, causal=causal)
  blocked = functools.partial(blocked_softmax_attention, q_mask=q_mask, kv_mask=kv_mask,
                              causal=causal, block_q=block_q, block_k=block_k)
  np.testing.assert_allclose(blocked(q, k, v), dense(q, k, v), atol=1e-5)
  cotangent = jax.random.normal(jax.random.key(9), q.shape)
  loss = lambda f: lambda q, k, v: (f(q, k, v) * cotangent).sum()
  for g_blocked, g_dense in zip(jax.grad(loss(blocked), argnums=(0, 1, 2))(q, k, v),
                                jax.grad(loss(dense), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g_blocked, g_dense, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_dropout_gradient_matches_finite_differences(causal):
  q, k, v, q_mask, kv_mask = inputs(12, 12)
  f = lambda v: (blocked_softmax_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask,
                                           causal=causal, block_q=4, block_k=3,
                                           dropout_rate=0.3, dropout_rng=jax.random.key(3),
                                           deterministic=False) ** 2).sum()
  direction = jax.random.normal(jax.random.key(4), v.shape)
  eps = 1e-2
  numeric = (f(v + eps * direction) - f(v - eps * direction)) / (2 * eps)
  analytic = (jax.grad(f)(v) * direction).sum()
  np.testing.assert_allclose(analytic, numeric, rtol=2e-3)
  # and the dropout actually drops: outputs differ from the deterministic ones
  det = blocked_softmax_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, block_q=4, block_k=4)
  drop = blocked_softmax_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, block_q=4,
                                   block_k=4, dropout_rate=0.3, dropout_rng=jax.random.key(3),
                                   deterministic=False)
  assert not np.allclose(det, drop)


@pytest.mark.parametrize("causal", [False, True])
def test_blocked_bfloat16_with_dropout_matches_float32(causal):
  # bfloat16 inputs are computed in float32 inside (the keep masks depend only on the rng and
  # the block indices): the same numbers as float32 on the rounded inputs, rounded once.
  q, k, v, q_mask, kv_mask = inputs(37, 37)
  q, k, v = (t.astype(jnp.bfloat16) for t in (q, k, v))
  run = jax.jit(functools.partial(blocked_softmax_attention, q_mask=q_mask, kv_mask=kv_mask,
                                  causal=causal, block_q=8, block_k=8, dropout_rate=0.3,
                                  dropout_rng=jax.random.key(3), deterministic=False))
  out = run(q, k, v)
  assert out.dtype == jnp.bfloat16
  expected = run(*(t.astype(jnp.float32) for t in (q, k, v)))
  np.testing.assert_allclose(out.astype(jnp.float32), expected, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("causal", [False, True])
def test_xla_implementation_matches_dense(causal):
  q, k, v, q_mask, kv_mask = inputs()
  outs = {}
  for impl in ("dense", "xla", "blocked"):
    mixer = registry.build_mixer("transformer",
                                 {"implementation": impl, "block_q": 16, "block_k": 8},
                                 causal=causal)
    outs[impl] = mixer.apply({}, q, k, v, q_mask=q_mask, kv_mask=kv_mask)
  valid = np.asarray(q_mask)
  np.testing.assert_allclose(np.asarray(outs["xla"])[valid], np.asarray(outs["dense"])[valid],
                             atol=1e-5)
  np.testing.assert_allclose(outs["blocked"], outs["dense"], atol=1e-5)


def test_unknown_implementation_is_named():
  mixer = registry.build_mixer("transformer", {"implementation": "flash"})
  q, k, v, q_mask, kv_mask = inputs()
  with pytest.raises(ValueError, match="implementation='flash'"):
    mixer.apply({}, q, k, v, q_mask=q_mask, kv_mask=kv_mask)


def compiled_bytes(impl, length):
  mixer = registry.build_mixer("transformer", {"implementation": impl})  # default blocks
  spec = jax.ShapeDtypeStruct((1, length, 2, 16), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)
  loss = lambda q, k, v, m: mixer.apply({}, q, k, v, q_mask=m, kv_mask=m).sum()
  stats = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(spec, spec, spec, mask).compile()
  stats = stats.memory_analysis()
  return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


def test_blocked_memory_is_linear_and_below_a_quarter_of_dense():
  assert compiled_bytes("blocked", 4096) <= 0.25 * compiled_bytes("dense", 4096)
  assert compiled_bytes("blocked", 8192) / compiled_bytes("blocked", 4096) <= 2.5


C = transformer.CPU_BLOCKED_FROM


@pytest.mark.parametrize("backend,length,dropout,expected", [
    ("gpu", 16, False, "xla"), ("gpu", 4 * C, False, "xla"),          # the fused kernel
    ("gpu", C - 1, True, "dense"), ("gpu", C, True, "blocked"),      # dropout: the CPU rule
    ("cpu", 16, False, "dense"), ("cpu", C - 1, False, "dense"), ("cpu", C, False, "blocked"),
    ("cpu", C - 1, True, "dense"), ("cpu", 4 * C, True, "blocked"),
    ("tpu", C - 1, False, "dense"), ("tpu", C, False, "blocked")])
def test_choose_implementation(backend, length, dropout, expected):
  assert transformer.choose_implementation(backend, length, dropout) == expected


def test_auto_is_the_default_and_named_in_implementations():
  assert transformer.SoftmaxAttention().implementation == "auto"
  assert transformer.SoftmaxAttention().float32_softmax is True
  assert "auto" in transformer.IMPLEMENTATIONS


def spy_on_kernels(monkeypatch):
  """Records which kernel each call of the module runs."""
  called = []
  for name in ("softmax_attention", "blocked_softmax_attention", "xla_attention"):
    original = getattr(transformer, name)

    def spy(*args, original=original, name=name, **kwargs):
      called.append(name)
      return original(*args, **kwargs)

    monkeypatch.setattr(transformer, name, spy)
  return called


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,kernel", [(C - 8, "softmax_attention"),
                                           (C + 8, "blocked_softmax_attention")])
def test_auto_equals_dense_on_both_sides_of_the_crossover(monkeypatch, causal, length, kernel):
  """On this CPU "auto" runs dense below CPU_BLOCKED_FROM and blocked at or above it (chosen
  at trace time from the static length), equal to dense to float32 tolerance, padded rows too."""
  monkeypatch.setattr(transformer, "current_backend", lambda: "cpu")
  q, k, v, q_mask, kv_mask = inputs(length, length)
  called = spy_on_kernels(monkeypatch)
  auto = registry.build_mixer("transformer", {}, causal=causal)
  out = jax.jit(lambda q, k, v: auto.apply({}, q, k, v, q_mask=q_mask, kv_mask=kv_mask))(q, k, v)
  assert called == [kernel]
  expected = softmax_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, causal=causal)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_auto_on_a_gpu_runs_the_fused_kernel_unless_weights_are_dropped(monkeypatch, causal):
  """With the backend standing in as "gpu" (`jax.nn.dot_product_attention` runs on this CPU
  too): the fused kernel without attention dropout, the CPU rule's dense kernel with it."""
  monkeypatch.setattr(transformer, "current_backend", lambda: "gpu")
  q, k, v, q_mask, kv_mask = inputs()
  called = spy_on_kernels(monkeypatch)
  auto = registry.build_mixer("transformer", {}, causal=causal, dropout_rate=0.2)
  out = auto.apply({}, q, k, v, q_mask=q_mask, kv_mask=kv_mask, deterministic=True)
  assert called == ["xla_attention"]
  expected = softmax_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask, causal=causal)
  valid = np.asarray(q_mask)
  np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(expected)[valid], atol=1e-5)
  auto.apply({}, q, k, v, q_mask=q_mask, kv_mask=kv_mask, deterministic=False,
             rngs={"dropout": jax.random.key(0)})
  assert called == ["xla_attention", "softmax_attention"]


@pytest.mark.parametrize("implementation", ["dense", "blocked"])
def test_float32_softmax_is_closer_to_the_float32_reference_in_bfloat16(implementation):
  """bfloat16 q, k, v: logits, softmax and weighted sum in float32 (the default) land closer to
  float32 attention of the same (rounded) inputs than computing them in bfloat16; the output
  is bfloat16 either way."""
  q, k, v, q_mask, kv_mask = inputs(64, 64, seed=3)
  q, k, v = ((t * scale).astype(jnp.bfloat16) for t, scale in ((q, 3.0), (k, 3.0), (v, 1.0)))
  reference = softmax_attention(*(t.astype(jnp.float32) for t in (q, k, v)), q_mask=q_mask,
                                kv_mask=kv_mask, causal=True)
  errors = {}
  for float32_softmax in (True, False):
    mixer = registry.build_mixer("transformer", {"implementation": implementation,
                                                 "float32_softmax": float32_softmax,
                                                 "block_q": 16, "block_k": 16}, causal=True)
    out = mixer.apply({}, q, k, v, q_mask=q_mask, kv_mask=kv_mask)
    assert out.dtype == jnp.bfloat16
    errors[float32_softmax] = float(jnp.abs(out.astype(jnp.float32) - reference).mean())
  assert errors[True] < 0.5 * errors[False], errors
  assert errors[True] < 4e-3, errors  # about bfloat16's rounding of the output alone


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("implementation", ["dense", "blocked", "xla"])
@pytest.mark.parametrize("bias", [False, True])
def test_decoding_step_by_step_matches_the_causal_forward(implementation, bias):
  from models.attention import positions
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(10, length=11, heads=4, kv_heads=2)
  mixer = registry.build_mixer("transformer", {"implementation": implementation,
                                               "block_q": 4, "block_k": 4}, causal=True)
  score_bias = positions.alibi_bias(4) if bias else None
  full, stepped, cache = mixer_steps(mixer, q, k, v, score_bias=score_bias)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  # the cache keeps the 2 kv heads only, the full length, in the input dtype
  assert cache["cached_key"].shape == (2, 11, 2, 8)
  assert cache["cached_value"].dtype == jnp.float32


def test_decoding_a_bfloat16_cache_keeps_the_input_dtype():
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(11, length=6, heads=2, kv_heads=1, dtype=jnp.bfloat16)
  mixer = registry.build_mixer("transformer", {"implementation": "dense"}, causal=True)
  full, stepped, cache = mixer_steps(mixer, q, k, v)
  assert cache["cached_key"].dtype == jnp.bfloat16 and stepped.dtype == jnp.bfloat16
  np.testing.assert_allclose(stepped.astype(np.float32), full.astype(np.float32), atol=2e-2)


@pytest.mark.parametrize("score_bias", ["alibi", "t5"])
def test_decoding_through_the_base_with_rope_mqa_and_a_score_bias(score_bias):
  """MultiHeadAttention (projections, RoPE at the token's position, one kv head, ALiBi / T5
  bias at (index, 0..L-1)) stepped token by token == its causal forward."""
  from models.attention.base import MultiHeadAttention
  from tests.decode_steps import base_steps
  layer = MultiHeadAttention(num_heads=4, qkv_dim=16, attention="transformer", causal=True,
                             rope=True, num_kv_heads=1, score_bias=score_bias,
                             t5_num_buckets=8, t5_max_distance=8)
  x = jax.random.normal(jax.random.key(12), (2, 13, 16))
  params = layer.init(jax.random.key(1), x)["params"]
  if score_bias == "t5":  # a non-trivial table (its init is small), so a wrong bucket shows
    params = dict(params, t5_relative_bias=jax.random.normal(jax.random.key(2), (8, 4)))
  full, stepped, cache = base_steps(layer, x, params)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["mixer"]["cached_key"].shape == (2, 13, 1, 4)


def test_decoding_a_non_causal_layer_is_an_error():
  from models.attention.base import MultiHeadAttention
  layer = MultiHeadAttention(num_heads=2, qkv_dim=8, attention="transformer", causal=False)
  x = jnp.ones((1, 4, 8))
  with pytest.raises(ValueError, match="causal"):
    layer.init(jax.random.key(0), x, decode=True)
