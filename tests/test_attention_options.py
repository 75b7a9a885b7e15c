"""The head and position options of the shared base (models/attention/base.py): multi-query /
grouped-query heads, rotary positions, ALiBi and T5 score biases, query-key normalisation, the
memory argument, and every build-time error; plus one registry-wide forward with them on."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import positions, registry
from models.attention.base import MultiHeadAttention
from models.attention.transformer import softmax_attention
from tests.attention_cases import HEAD_DIM, HEADS, LENGTH, SMALL_KWARGS

FEATURES = 12


def tokens(seed=0, batch=2, length=LENGTH, features=FEATURES):
  return jax.random.normal(jax.random.key(seed), (batch, length, features))


def ragged(length=LENGTH, valid=(LENGTH, LENGTH - 5)):
  return jnp.arange(length)[None, :] < jnp.asarray(valid)[:, None]


def build(attention="transformer", num_heads=4, qkv_dim=16, **kwargs):
  kwargs.setdefault("max_len", LENGTH)
  return MultiHeadAttention(num_heads=num_heads, qkv_dim=qkv_dim, attention=attention, **kwargs)


# --- multi-query / grouped-query heads -----------------------------------------------------


def test_shared_kv_heads_equal_mha_with_tied_heads():
  # MQA (1 key/value head) and GQA (2 of 4) equal an MHA whose key/value head i is the shared
  # model's head i // (4 / kv_heads): the same sums, up to the order XLA's CPU matmuls of
  # different widths add them in (measured max difference 2.4e-7).
  x, mask = tokens(), ragged()
  full = build(attention_kwargs={"implementation": "dense"})
  params = jax.jit(full.init)(jax.random.key(0), x, mask)["params"]
  cases = []
  for kv_heads in (1, 2):
    group = 4 // kv_heads
    shared = {**params, **{n: {"kernel": params[n]["kernel"][:, ::group]}
                           for n in ("key", "value")}}
    tied = {**params, **{n: {"kernel": jnp.repeat(shared[n]["kernel"], group, axis=1)}
                         for n in ("key", "value")}}
    grouped = build(num_kv_heads=kv_heads, attention_kwargs={"implementation": "dense"})
    cases.append((grouped, shared, tied))
  outs = jax.jit(lambda: [(g.apply({"params": s}, x, mask), full.apply({"params": t}, x, mask))
                          for g, s, t in cases])()
  for got, want in outs:
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_grouped_query_shapes_and_parameter_count():
  x, mask = tokens(), ragged()
  for kv_heads, kv_width in ((0, 16), (4, 16), (2, 8), (1, 4)):
    params = jax.eval_shape(build(num_kv_heads=kv_heads).init, jax.random.key(0), x,
                            mask)["params"]
    assert params["query"]["kernel"].shape == (FEATURES, 4, 4)
    assert params["key"]["kernel"].shape == (FEATURES, kv_width // 4, 4)
    assert params["value"]["kernel"].shape == (FEATURES, kv_width // 4, 4)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    assert count == FEATURES * 16 + 2 * FEATURES * kv_width + 16 * FEATURES


# --- rotary positions ----------------------------------------------------------------------


def test_rope_scores_depend_only_on_relative_position_and_keep_norms():
  q, k = (jax.random.normal(key, (1, 9, 2, 8)) for key in jax.random.split(jax.random.key(1)))
  pos = jnp.arange(9)
  scores = lambda shift: jnp.einsum("bqhd,bkhd->bhqk", positions.rotate(q, pos + shift),
                                    positions.rotate(k, pos + shift))
  np.testing.assert_allclose(scores(37), scores(0), atol=2e-5)
  np.testing.assert_allclose(scores(-5), scores(0), atol=2e-5)
  rotated = positions.rotate(q, pos + 11)
  np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(q, axis=-1),
                             rtol=1e-6)
  assert not np.allclose(rotated, q)
  # position 0 is the identity
  np.testing.assert_array_equal(positions.rotate(q, jnp.zeros(9, jnp.int32)), q)


def test_rope_is_roformer_eq34_up_to_a_channel_permutation():
  # RoFormer eq. 34 rotates adjacent pairs (2i, 2i+1) by position * base^(-2i/d); the half split
  # pairs (i, i + d/2). Interleaving the halves maps one onto the other.
  d, length = 8, 6
  x = np.random.default_rng(0).normal(size=(1, length, 1, d)).astype(np.float32)
  perm = np.stack([np.arange(d // 2), np.arange(d // 2) + d // 2], -1).reshape(-1)  # 0,4,1,5,..
  theta = 10000.0 ** (-2 * np.arange(d // 2) / d)
  want = np.empty_like(x)
  xi = x[..., perm]  # the paper's layout: pair i at channels 2i, 2i+1
  for m in range(length):
    c, s = np.cos(m * theta), np.sin(m * theta)
    want[0, m, 0, 0::2] = xi[0, m, 0, 0::2] * c - xi[0, m, 0, 1::2] * s
    want[0, m, 0, 1::2] = xi[0, m, 0, 1::2] * c + xi[0, m, 0, 0::2] * s
  got = np.asarray(positions.rotate(jnp.asarray(x), jnp.arange(length)))[..., perm]
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_rope_bfloat16_keeps_dtype_and_is_computed_in_float32():
  q = jax.random.normal(jax.random.key(2), (1, 300, 1, 8))
  pos = jnp.arange(300)
  got = positions.rotate(q.astype(jnp.bfloat16), pos)
  assert got.dtype == jnp.bfloat16
  want = positions.rotate(q.astype(jnp.bfloat16).astype(jnp.float32), pos)
  np.testing.assert_allclose(got.astype(jnp.float32), want, atol=3e-2, rtol=1e-2)


@pytest.mark.parametrize("attention", ["performer", "linear_transformer"])
def test_rope_through_a_kernel_variant(attention):
  x, mask = tokens(), ragged()
  kwargs = dict(attention=attention, causal=True)
  x2 = x.at[:, -1].add(1.0)

  @jax.jit
  def run():
    params = build(**kwargs).init(jax.random.key(0), x, mask)
    return (build(**kwargs).apply(params, x, mask),
            build(rope=True, **kwargs).apply(params, x, mask),
            build(rope=True, **kwargs).apply(params, x2, mask))

  plain, rotated, rotated2 = run()
  assert bool(jnp.all(jnp.isfinite(rotated)))
  assert not np.allclose(plain, rotated, atol=1e-4)
  # still causal: a change at the last position moves no earlier output
  np.testing.assert_allclose(rotated2[:, :-1], rotated[:, :-1], atol=1e-5)


def test_rope_in_transformer_is_shift_invariant():
  # Only relative positions enter the scores: rotating q and k at positions + s (here via the
  # causal offset of queries aligned to longer keys) changes nothing. Direct check: the same
  # layer on a sequence and on the same sequence with positions shifted gives the same output.
  x, mask = tokens(), ragged()
  layer = build(rope=True, attention_kwargs={"implementation": "dense"})

  def shifted(params, s):
    q, k, v = (jnp.einsum("blf,fhd->blhd", x, params[n]["kernel"])
               for n in ("query", "key", "value"))
    pos = jnp.arange(LENGTH) + s
    q, k = positions.rotate(q, pos), positions.rotate(k, pos)
    out = softmax_attention(q, k, v, q_mask=mask, kv_mask=mask)
    return jnp.einsum("blhd,hdf->blf", out, params["out"]["kernel"])

  @jax.jit
  def run():
    params = layer.init(jax.random.key(0), x, mask)["params"]
    return layer.apply({"params": params}, x, mask), shifted(params, 0), shifted(params, 23)

  got, at0, at23 = run()
  np.testing.assert_allclose(got, at0, atol=1e-5)
  np.testing.assert_allclose(at23, at0, atol=1e-4)


# --- score biases --------------------------------------------------------------------------


def test_alibi_slopes_follow_the_paper():
  np.testing.assert_allclose(positions.alibi_slopes(8), 2.0 ** -np.arange(1, 9))
  np.testing.assert_allclose(positions.alibi_slopes(4), 2.0 ** (-2.0 * np.arange(1, 5)))
  # not a power of two: 4's slopes, then every other slope of 8's
  np.testing.assert_allclose(positions.alibi_slopes(6),
                             [2 ** -2, 2 ** -4, 2 ** -6, 2 ** -8, 2 ** -1, 2 ** -3])
  bias = positions.alibi_bias(2)(jnp.arange(3), jnp.arange(4))
  np.testing.assert_allclose(bias[1], -(2.0 ** -8) * np.abs(np.arange(3)[:, None]
                                                             - np.arange(4)[None]))


def test_t5_buckets_hand_checked():
  # relative = key - query; 32 buckets, max distance 128 (T5's defaults).
  bucket = lambda rel, bi: int(positions.t5_bucket(jnp.asarray(rel, jnp.int32),
                                                   bidirectional=bi))
  # bidirectional: 16 buckets per direction, 8 exact (distances 0..7), 8 log-spaced for 8..127
  # as 8 + floor(log(n / 8) / log(16) * 8); keys after the query offset by 16.
  for rel, want in [(0, 0), (-1, 1), (-7, 7), (-8, 8), (-15, 9), (-16, 10), (-32, 12),
                    (-64, 14), (-127, 15), (-128, 15), (-5000, 15),
                    (1, 17), (7, 23), (16, 26), (128, 31)]:
    assert bucket(rel, True) == want, (rel, want)
  # causal: 32 buckets for keys at or before the query, 16 exact, then 16 + floor(log(n / 16) /
  # log(8) * 16); keys after the query in bucket 0.
  for rel, want in [(0, 0), (5, 0), (-1, 1), (-15, 15), (-16, 16), (-32, 21), (-64, 26),
                    (-127, 31), (-128, 31), (-1000, 31)]:
    assert bucket(rel, False) == want, (rel, want)


def bias_layer(score_bias, causal, implementation, **kwargs):
  return build(score_bias=score_bias, causal=causal, t5_num_buckets=8, t5_max_distance=12,
               attention_kwargs={"implementation": implementation, **kwargs})


def test_score_bias_dense_blocked_xla_local_agree():
  # ALiBi and T5, bidirectional and causal: dense == blocked (blocks of 5 queries and 3 keys,
  # ragged) == xla == local with one block; and cross attention (7 queries, 16 keys, each at
  # its own positions) dense == blocked == xla. One compile for all of them.
  x, mask = tokens(), ragged()
  xq, q_mask = tokens(1, length=7), ragged(7, (7, 4))
  params = jax.jit(bias_layer("t5", False, "dense").init)(jax.random.key(0), x, mask)["params"]
  # a table far from zero, so that a misplaced bucket shows
  params = {**params, "t5_relative_bias": 3.0 * jax.random.normal(
      jax.random.key(5), params["t5_relative_bias"].shape)}
  no_t5 = {n: p for n, p in params.items() if n != "t5_relative_bias"}
  cases = {}
  for score_bias in ("alibi", "t5"):
    for causal in (False, True):
      p = params if score_bias == "t5" else no_t5
      layers = [bias_layer(score_bias, causal, "dense"),
                bias_layer(score_bias, causal, "blocked", block_q=5, block_k=3),
                bias_layer(score_bias, causal, "xla"),
                build("local", score_bias=score_bias, causal=causal, t5_num_buckets=8,
                      t5_max_distance=12, attention_kwargs={"block_size": LENGTH})]
      cases[score_bias, causal, "self"] = (p, layers, (x, mask))
    cross = [build(cross=True, score_bias=score_bias, t5_num_buckets=8, t5_max_distance=12,
                   attention_kwargs=dict(implementation=impl, **extra))
             for impl, extra in (("dense", {}), ("blocked", {"block_q": 3, "block_k": 5}),
                                 ("xla", {}))]
    cases[score_bias, False, "cross"] = (p, cross, (xq, q_mask, x, mask))
  no_bias = build(attention_kwargs={"implementation": "dense"})
  outs, plain = jax.jit(lambda: (
      {key: [layer.apply({"params": p}, *args) for layer in layers]
       for key, (p, layers, args) in cases.items()},
      no_bias.apply({"params": no_t5}, x, mask)))()
  errors = {}
  for key, (want, *others) in outs.items():
    if key[2] == "self" and not key[1]:
      assert not np.allclose(want, plain, atol=1e-3), key  # the bias does something
    for got in others:
      errors[key] = max(errors.get(key, 0.0), float(jnp.abs(got - want).max()))
      np.testing.assert_allclose(got, want, atol=1e-5, err_msg=str(key))
  print("max |implementation - dense|:", errors)


def test_score_bias_gradients_blocked_equal_dense_and_reach_the_t5_table():
  # The blocked custom VJP pulls dS back through the bias per block: every parameter's and the
  # input's gradient equals dense's, the T5 table's too (checked against finite differences).
  x, mask = tokens(), ragged()
  params = jax.jit(bias_layer("t5", False, "dense").init)(jax.random.key(0), x, mask)["params"]
  no_t5 = {n: p for n, p in params.items() if n != "t5_relative_bias"}
  cotangent = jax.random.normal(jax.random.key(9), x.shape)
  cases = [("t5", False), ("t5", True), ("alibi", True)]

  def grads(layer, p):
    loss = lambda p, x: (layer.apply({"params": p}, x, mask) * cotangent).sum()
    return jax.grad(loss, argnums=(0, 1))(p, x)

  blocked_t5 = bias_layer("t5", False, "blocked", block_q=5, block_k=3)
  f = lambda t: (blocked_t5.apply({"params": {**params, "t5_relative_bias": t}}, x, mask)
                 * cotangent).sum()
  direction = jax.random.normal(jax.random.key(4), params["t5_relative_bias"].shape)
  eps = 1e-2
  t0 = params["t5_relative_bias"]

  @jax.jit
  def run():
    out = {}
    for score_bias, causal in cases:
      p = params if score_bias == "t5" else no_t5
      out[score_bias, causal] = (
          grads(bias_layer(score_bias, causal, "dense"), p),
          grads(bias_layer(score_bias, causal, "blocked", block_q=5, block_k=3), p))
    numeric = (f(t0 + eps * direction) - f(t0 - eps * direction)) / (2 * eps)
    return out, numeric

  out, numeric = run()
  for key, (g_dense, g_blocked) in out.items():
    flat = jax.tree_util.tree_leaves_with_path(g_dense)
    for (path, a), b in zip(flat, jax.tree.leaves(g_blocked)):
      np.testing.assert_allclose(b, a, atol=1e-5, err_msg=f"{key} {jax.tree_util.keystr(path)}")
  table = out["t5", False][1][0]["t5_relative_bias"]
  assert float(jnp.abs(table).max()) > 1e-3
  assert float(jnp.abs(out["t5", True][1][0]["t5_relative_bias"]).max()) > 1e-3
  np.testing.assert_allclose((table * direction).sum(), numeric, rtol=2e-3)


# --- query-key normalisation ---------------------------------------------------------------


def test_qk_norm_scale_is_learned_and_scores_ignore_query_scale():
  x, mask = tokens(), ragged()
  layer = build(qk_norm=True, attention_kwargs={"implementation": "dense"})
  scale_q_and_k = lambda p: {**p, "query": {"kernel": 7.0 * p["query"]["kernel"]},
                             "key": {"kernel": 0.1 * p["key"]["kernel"]}}

  @jax.jit
  def run():
    params = layer.init(jax.random.key(0), x, mask)["params"]
    apply = lambda p: layer.apply({"params": p}, x, mask)
    grad = jax.grad(lambda p: (apply(p) ** 2).sum())(params)
    return params, apply(params), apply(scale_q_and_k(params)), grad

  params, out, scaled, grad = run()
  np.testing.assert_allclose(params["qk_norm_scale"], math.log2(LENGTH ** 2 - LENGTH), rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(out)))
  # cosine similarities: scaling the query or key projection changes nothing
  np.testing.assert_allclose(scaled, out, atol=1e-5)
  assert float(jnp.abs(grad["qk_norm_scale"])) > 0
  # the net logit scale is g: softmax(g * cos(q_i, k_j)) by hand
  q, k, v = (jnp.einsum("blf,fhd->blhd", x, params[n]["kernel"]) for n in ("query", "key", "value"))
  unit = lambda t: t / jnp.linalg.norm(t, axis=-1, keepdims=True)
  logits = params["qk_norm_scale"] * jnp.einsum("bqhd,bkhd->bhqk", unit(q), unit(k))
  weights = jax.nn.softmax(jnp.where(mask[:, None, None, :], logits, -1e30), axis=-1)
  mixed = jnp.where(mask[:, :, None, None], jnp.einsum("bhqk,bkhd->bqhd", weights, v), 0.0)
  np.testing.assert_allclose(jnp.einsum("blhd,hdf->blf", mixed, params["out"]["kernel"]), out,
                             atol=1e-5)


# --- memory --------------------------------------------------------------------------------


class _CarryMixer(nn.Module):
  causal: bool = False

  @nn.compact
  def __call__(self, x, mask, memory=None, deterministic=True):
    memory = jnp.zeros_like(x[:, :1]) if memory is None else memory
    return x + memory, memory + x.mean(1, keepdims=True)


@pytest.fixture
def memory_variant():
  name = "_test_memory_mixer"
  registry.register(name, causal=False, cross=False, kind="sequence", memory=True)(_CarryMixer)
  yield name
  registry._REGISTRY.pop(name)  # pylint: disable=protected-access


def test_memory_is_passed_and_returned(memory_variant):
  x = tokens(features=16)
  layer = MultiHeadAttention(num_heads=2, qkv_dim=16, attention=memory_variant)
  y, memory = layer.apply({}, x, None)
  np.testing.assert_allclose(y, x)
  y2, _ = layer.apply({}, x, None, memory=memory)
  np.testing.assert_allclose(y2, x + memory, rtol=1e-6)


def test_memory_for_a_variant_without_it_is_an_error():
  x, mask = tokens(), ragged()
  with pytest.raises(ValueError, match="'transformer' carries no memory"):
    jax.eval_shape(build().init, jax.random.key(0), x, mask, memory=x[:, :2])
  with pytest.raises(ValueError, match="'s4d' carries no memory"):
    jax.eval_shape(build("s4d", qkv_dim=FEATURES).init, jax.random.key(0), x, mask,
                   memory=x[:, :2])


# --- build-time errors ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_kv_heads=3), "num_kv_heads=3 must divide num_heads=4"),
    (dict(num_kv_heads=-1), "num_kv_heads=-1 must divide"),
    (dict(attention="s4d", num_kv_heads=2), "'s4d' cannot take fewer key/value heads"),
    (dict(attention="s4d", rope=True), "'s4d' cannot take rope=True: a sequence mixer"),
    (dict(attention="synthesizer", rope=True), "'synthesizer' cannot take rope=True: it does not"),
    (dict(rope=True, qkv_dim=12), "rope=True needs an even head dimension"),
    (dict(score_bias="relative"), "score_bias='relative'; expected one of"),
    (dict(attention="performer", score_bias="alibi"), "'performer' cannot take score_bias"),
    (dict(attention="s4d", score_bias="t5"), "'s4d' cannot take score_bias"),
    (dict(score_bias="t5", t5_num_buckets=7), "needs an even t5_num_buckets"),
    (dict(attention="s4d", qk_norm=True), "'s4d' cannot take qk_norm=True"),
])
def test_option_errors(kwargs, message):
  x, mask = tokens(), ragged()
  kwargs = dict(kwargs)
  if kwargs.get("attention") == "s4d":
    kwargs.setdefault("qkv_dim", 16)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    jax.eval_shape(build(**kwargs).init, jax.random.key(0), x, mask)


def test_sequence_mixer_accepts_num_kv_heads_equal_to_num_heads():
  x, mask = tokens(features=16), ragged()
  layer = build("s4d", num_kv_heads=4, attention_kwargs=SMALL_KWARGS["s4d"])
  out = jax.eval_shape(lambda: layer.apply(layer.init(jax.random.key(0), x, mask), x, mask))
  assert out.shape == x.shape


# --- registry-wide: every qkv variant with the options it supports -------------------------


@pytest.mark.parametrize("name", registry.names(kind="qkv"))
def test_every_qkv_variant_with_its_options_is_finite_and_padding_invariant(name):
  spec = registry.get(name)
  options = {"qk_norm": True}
  if spec.rope:
    options["rope"] = True
  if spec.kv_heads:
    options["num_kv_heads"] = 1
  if spec.score_bias:
    options["score_bias"] = "t5"
  layer = MultiHeadAttention(num_heads=HEADS, qkv_dim=HEADS * HEAD_DIM, attention=name,
                             attention_kwargs=SMALL_KWARGS.get(name, {}), max_len=LENGTH,
                             **options)
  # One forward: the two examples share their real tokens and differ only under the padding.
  valid = LENGTH - 5
  x = tokens(3, batch=1)
  noise = 50.0 * tokens(4, batch=1)
  is_real = (jnp.arange(LENGTH) < valid)[None, :, None]
  both = jnp.concatenate([x, jnp.where(is_real, x, noise)])
  mask = ragged(valid=(valid, valid))
  out = jax.jit(lambda: layer.apply(layer.init(jax.random.key(0), both, mask), both, mask))()
  assert bool(jnp.all(jnp.isfinite(out)))
  np.testing.assert_allclose(out[0, :valid], out[1, :valid], atol=1e-4, rtol=1e-4)


# --- the options together, in training, in bfloat16 ------------------------------------------


def option_matrix_cases():
  """Every mixer path that takes a score bias (transformer dense / blocked over several blocks /
  xla, and local), each bias, causal and not; all other options on at once."""
  paths = [("transformer", {"implementation": "dense"}),
           ("transformer", {"implementation": "blocked", "block_q": 5, "block_k": 3}),
           ("transformer", {"implementation": "xla"}),
           ("local", {"block_size": 4, "look_back": True})]
  for attention, kwargs in paths:
    for bias in ("alibi", "t5"):
      for causal in (False, True):
        label = f"{attention}-{kwargs.get('implementation', 'local')}-{bias}-" + (
            "causal" if causal else "bidirectional")
        yield pytest.param(attention, kwargs, bias, causal, id=label)


@pytest.mark.parametrize("attention,kwargs,bias,causal", list(option_matrix_cases()))
def test_all_options_train_in_bfloat16_with_dropout(attention, kwargs, bias, causal):
  """num_kv_heads=1, rope, qk_norm and a score bias together, bfloat16 compute, attention
  dropout on in training (off for xla, which has none): bfloat16 out, finite float32 parameter
  gradients (the T5 table and the qk-norm scale among them), finite evaluation; padding still
  invisible to real positions."""
  rate = 0.0 if kwargs.get("implementation") == "xla" else 0.2
  layer = build(attention, num_kv_heads=1, rope=True, qk_norm=True, score_bias=bias,
                causal=causal, dropout_rate=rate, attention_kwargs=kwargs, dtype=jnp.bfloat16)
  x, mask = tokens(3).astype(jnp.bfloat16), ragged()
  noisy = jnp.where(mask[..., None], x, 50.0)
  key = functools.partial(jax.random.key, impl="rbg")

  @jax.jit
  def run(x, noisy):
    variables = layer.init({"params": key(0), "dropout": key(1)}, x, mask)

    def loss(params):
      out = layer.apply({"params": params}, x, mask, deterministic=False,
                        rngs={"dropout": key(2)})
      return out.astype(jnp.float32).sum(), out

    (_, train_out), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    return (train_out, grads, layer.apply(variables, x, mask),
            layer.apply(variables, noisy, mask), variables["params"])

  train_out, grads, eval_out, noisy_out, params = run(x, noisy)
  assert train_out.dtype == eval_out.dtype == jnp.bfloat16
  assert params["key"]["kernel"].shape[1] == 1 and "qk_norm_scale" in params
  assert ("t5_relative_bias" in params) == (bias == "t5")
  for path, grad in jax.tree_util.tree_leaves_with_path(grads):
    assert grad.dtype == jnp.float32, jax.tree_util.keystr(path)
    assert bool(jnp.all(jnp.isfinite(grad))), jax.tree_util.keystr(path)
  if bias == "t5":
    assert float(jnp.abs(grads["t5_relative_bias"]).max()) > 0
  for out in (train_out, eval_out, noisy_out):
    assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))
  real = np.asarray(mask)[..., None]
  np.testing.assert_array_equal(np.where(real, np.asarray(noisy_out, np.float32), 0),
                                np.where(real, np.asarray(eval_out, np.float32), 0))
