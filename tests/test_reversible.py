"""Reversible residual layers and the chunked feed-forward."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import reversible
from models.blocks import FeedForward
from models.chunked_ffn import apply_in_chunks

B, L, F = 2, 16, 16


def assert_trees_close(a, b, atol, rtol=1e-4):
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, atol=atol, rtol=rtol),
                         a, b)


def dense_branch(i, p, x, aux):
  return jnp.tanh(x @ p["w1"]) @ p["w2"] * aux[..., None]


def dense_params(layers, hidden, seed=0):
  keys = iter(jax.random.split(jax.random.key(seed), 4 * layers))
  layer = lambda: {"w1": 0.3 * jax.random.normal(next(keys), (F, hidden)),
                   "w2": 0.3 * jax.random.normal(next(keys), (hidden, F))}
  return tuple((layer(), layer()) for _ in range(layers))


def test_stack_equals_two_streams_and_its_gradient_equals_autodiff():
  params = dense_params(3, 32)
  x1, x2 = jax.random.normal(jax.random.key(1), (2, B, L, F))
  weights = jnp.ones((B, L))

  def plain(params, x1, x2):  # y1 = x1 + F(x2), y2 = x2 + G(y1), layer after layer
    for i, (pf, pg) in enumerate(params):
      x1 = x1 + dense_branch(i, pf, x2, weights)
      x2 = x2 + dense_branch(i, pg, x1, weights)
    return x1, x2

  @functools.partial(jax.jit, static_argnums=0)
  def out_and_grads(stack, params, x1, x2):
    out, vjp = jax.vjp(stack, params, x1, x2)
    return out, vjp(tuple(jnp.broadcast_to(jnp.arange(F, dtype=t.dtype), t.shape) for t in out))

  rev = lambda p, a, b: reversible.reversible_stack(dense_branch, dense_branch, p, a, b, weights)
  out, grads = out_and_grads(rev, params, x1, x2)
  expected_out, expected_grads = out_and_grads(plain, params, x1, x2)
  assert_trees_close(out, expected_out, atol=1e-6)
  # Gradients are O(100); inverting the layers (x = y - F(.)) costs float32 round-off.
  assert_trees_close(grads, expected_grads, atol=1e-3, rtol=1e-3)


def test_activation_memory_does_not_grow_with_depth():
  x = jax.ShapeDtypeStruct((1, 256, F), jnp.float32)
  weights = jnp.ones((1, 256))

  def temp_bytes(stack, layers):
    params = jax.eval_shape(lambda: dense_params(layers, 512))
    loss = lambda p, x: sum(t.sum() for t in stack(dense_branch, dense_branch, p, x, x, weights))
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  # Each layer's hidden activation is 512 KiB; the reversible stack keeps none of them.
  rev = temp_bytes(reversible.reversible_stack, 8) - temp_bytes(reversible.reversible_stack, 2)
  plain = temp_bytes(reversible.plain_stack, 8) - temp_bytes(reversible.plain_stack, 2)
  assert plain > 6 * 512 * 1024
  assert rev < 0.25 * plain, (rev, plain)


def make_layers(recompute, layers=2):
  return reversible.ReversibleLayers(num_layers=layers, num_heads=2, qkv_dim=F, mlp_dim=32,
                                     dropout_rate=0.1, attention_dropout_rate=0.1,
                                     recompute=recompute)


def test_module_matches_plain_autodiff_with_the_same_dropout():
  # Dropout on (deterministic=False): the backward recomputation must redraw the same masks.
  # One layer keeps compilation short; the layer-to-layer inversion is tested above.
  x = jax.random.normal(jax.random.key(0), (B, L, F))
  mask = jnp.arange(L)[None] < jnp.array([[11], [L]])
  variables = jax.jit(make_layers(True, 1).init)(jax.random.key(1), x, mask)
  rngs = {"dropout": jax.random.key(5, impl="rbg")}  # rbg: compiles faster than threefry

  @functools.partial(jax.jit, static_argnums=2)
  def out_and_grads(variables, x, recompute):
    run = lambda v, x: make_layers(recompute, 1).apply(v, x, mask, False, rngs=rngs)
    out, vjp = jax.vjp(run, variables, x)
    return out, vjp(jnp.broadcast_to(jnp.arange(F, dtype=out.dtype), out.shape))

  out, grads = out_and_grads(variables, x, True)
  plain_out, plain_grads = out_and_grads(variables, x, False)
  np.testing.assert_allclose(out, plain_out, atol=1e-6)
  assert np.abs(np.asarray(out[0, 11:])).max() == 0.0  # padded positions stay zero
  assert_trees_close(grads, plain_grads, atol=1e-4)


def test_module_is_the_two_stream_recurrence():
  x = jax.random.normal(jax.random.key(2), (B, L, F))
  mask = jnp.ones((B, L), bool)
  layers = make_layers(True)
  params = jax.jit(layers.init)(jax.random.key(3), x, mask)["params"]
  f = [reversible.AttentionBranch(num_heads=2, qkv_dim=F, dropout_rate=0.1,
                                  attention_dropout_rate=0.1, layer=i) for i in range(2)]
  g = reversible.FeedForwardBranch(mlp_dim=32, dropout_rate=0.1)

  @jax.jit
  def two_streams(params, x):
    x1 = x2 = x
    for i in range(2):
      x1 = x1 + f[i].apply({"params": params[f"attention_{i}"]}, x2, mask)
      x2 = x2 + g.apply({"params": params[f"ffn_{i}"]}, x1, mask)
    return (x1 + x2) / 2

  np.testing.assert_allclose(jax.jit(layers.apply)({"params": params}, x, mask),
                             two_streams(params, x), atol=1e-6)


def test_layers_draw_their_own_fixed_randomness():
  # Performer's fixed (evaluation) features come from `seed` and the layer's path; layers
  # applied as top-level branches must still have different paths, hence different features.
  x = jax.random.normal(jax.random.key(4), (B, L, F))
  mask = jnp.ones((B, L), bool)
  kwargs = dict(num_heads=2, qkv_dim=F, attention="performer",
                attention_kwargs={"num_features": 8})
  layer0 = reversible.AttentionBranch(**kwargs, layer=0)
  layer1 = reversible.AttentionBranch(**kwargs, layer=1)
  params0 = layer0.init(jax.random.key(5), x, mask)["params"]
  params1 = {("attention_1" if k == "attention_0" else k): v for k, v in params0.items()}
  out0 = layer0.apply({"params": params0}, x, mask)
  out1 = layer1.apply({"params": params1}, x, mask)   # same weights, other layer
  assert float(jnp.max(jnp.abs(out0 - out1))) > 1e-3
  np.testing.assert_array_equal(out0, layer0.apply({"params": params0}, x, mask))


class ChunkedFFN(nn.Module):
  chunk: int

  @nn.compact
  def __call__(self, x, deterministic=True):
    return apply_in_chunks(FeedForward(32, name="ffn"), x, self.chunk, deterministic)


def test_chunked_ffn_equals_unchunked():
  x = jax.random.normal(jax.random.key(0), (B, 13, F))  # 13 = 3 chunks of 4 + 1 (padded)
  variables = ChunkedFFN(0).init(jax.random.key(1), x)
  # Same parameter tree, so checkpoints do not depend on the chunk size.
  assert (jax.tree_util.tree_structure(variables)
          == jax.tree_util.tree_structure(jax.eval_shape(ChunkedFFN(4).init, jax.random.key(1), x)))

  @functools.partial(jax.jit, static_argnums=1)
  def out_and_grads(variables, chunk):
    out, vjp = jax.vjp(lambda v: ChunkedFFN(chunk).apply(v, x), variables)
    return out, vjp(out)

  out, grads = out_and_grads(variables, 4)
  expected_out, expected_grads = out_and_grads(variables, 0)
  np.testing.assert_allclose(out, expected_out, atol=1e-6)
  assert_trees_close(grads, expected_grads, atol=1e-4)


def test_negative_chunk_size_is_an_error():
  x = jnp.zeros((1, 4, F))
  with pytest.raises(ValueError, match="ffn_chunk_size=-1"):
    ChunkedFFN(-1).init(jax.random.key(0), x)


def test_encoder_options():
  from models.blocks import Encoder  # pylint: disable=import-outside-toplevel
  inputs = jnp.asarray(np.random.default_rng(0).integers(1, 16, (2, 12)), jnp.int32)
  mask = jnp.arange(12)[None] < jnp.array([[12], [7]])
  build = lambda **kw: Encoder(vocab_size=16, emb_dim=F, num_heads=2, num_layers=2, qkv_dim=F,
                               mlp_dim=32, max_len=12, prepend_cls=True, **kw)
  run = lambda model: jax.jit(functools.partial(model.apply, deterministic=True))

  # Chunked FFN: same parameters, same output.
  plain, chunked = build(ffn_chunk_size=0), build(ffn_chunk_size=5)
  variables = jax.jit(plain.init)(jax.random.key(0), inputs, mask)
  np.testing.assert_allclose(run(chunked)(variables, inputs, mask)[0],
                             run(plain)(variables, inputs, mask)[0], atol=1e-5)
  # Reversible: its own layers (no block_i), padding-invariant output.
  model = build(reversible=True, ffn_chunk_size=5)
  variables = jax.jit(model.init)(jax.random.key(0), inputs, mask)
  assert "reversible" in variables["params"] and "block_0" not in variables["params"]
  hidden, out_mask = run(model)(variables, inputs, mask)
  changed, _ = run(model)(variables, jnp.where(mask, inputs, 3), mask)
  valid = np.asarray(out_mask)
  np.testing.assert_allclose(np.asarray(hidden)[valid], np.asarray(changed)[valid], atol=1e-5)
