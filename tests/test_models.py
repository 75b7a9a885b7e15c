"""Shared encoder, embeddings, heads and the config-built classifier."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import transformer_listops
from models import build_model, heads
from models.reversible import AttentionBranch
from models.attention.transformer import softmax_attention
from models.embedding import Embedder, sinusoidal_table


def tiny_model(**overrides):
  config = transformer_listops.get_config("tiny")
  for key, value in overrides.items():
    setattr(config.model, key, value)
  return build_model(config.model, vocab_size=16, num_classes=10, max_len=12), config


def batch(lengths=(12, 7), seed=0):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(1, 16, (len(lengths), 12)).astype(np.int32)
  mask = np.arange(12)[None] < np.array(lengths)[:, None]
  return {"inputs": jnp.asarray(inputs), "mask": jnp.asarray(mask)}


@pytest.mark.parametrize("pooling", ["CLS", "MEAN"])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_padding_invariance_of_logits(pooling, positions):
  model, _ = tiny_model(pooling=pooling, positions=positions)
  b = batch()
  params = model.init(jax.random.key(0), b)
  logits, _ = model.apply(params, b)
  changed = dict(b, inputs=jnp.where(b["mask"], b["inputs"], 3))  # other tokens at padding
  logits2, _ = model.apply(params, changed)
  np.testing.assert_allclose(logits, logits2, atol=1e-5)
  assert logits.shape == (2, 10)


def test_zero_token_is_not_padding():
  # Masks come from the data: token 0 inside the mask is a real token and changes the output.
  model, _ = tiny_model(pooling="MEAN")
  b = batch(lengths=(12, 12))
  params = model.init(jax.random.key(0), b)
  zeroed = dict(b, inputs=b["inputs"].at[:, 3].set(0))
  assert not np.allclose(model.apply(params, b)[0], model.apply(params, zeroed)[0])


def test_dropout_on_differs_by_key_and_off_is_deterministic():
  model, _ = tiny_model(dropout_rate=0.5, attention_dropout_rate=0.5)
  b = batch()
  params = model.init(jax.random.key(0), b)
  run = lambda seed, det: model.apply(params, b, deterministic=det,
                                      rngs={"dropout": jax.random.key(seed)})[0]
  np.testing.assert_array_equal(run(1, True), run(2, True))
  assert not np.allclose(run(1, False), run(2, False))


def test_cls_token_prepended_and_mean_pooling_ignores_padding():
  hidden = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  mask = jnp.array([[True, True, False, False], [True, True, True, True]])
  np.testing.assert_allclose(heads.pool(hidden, mask, "MEAN")[0], hidden[0, :2].mean(0))
  np.testing.assert_allclose(heads.pool(hidden, mask, "CLS"), hidden[:, 0])
  model, _ = tiny_model(pooling="CLS")
  params = model.init(jax.random.key(0), batch())
  assert params["params"]["encoder"]["embed"]["cls"].shape == (1, 1, 16)


@pytest.mark.parametrize("features", [8, 7])
def test_sinusoidal_table_is_lras(features):
  # LRA's common_layers.sinusoidal_init, written out: feature 2i = sin(p * w_i), feature 2i+1 =
  # cos(p * w_i), w_i = exp(2i * -(log(10000) / d)) (interleaved, not half sin / half cos).
  table = sinusoidal_table(50, features)
  expected = np.zeros((50, features))
  for p in range(50):
    for j in range(features):
      w = np.exp((j - j % 2) * -(np.log(10000.0) / features))
      expected[p, j] = np.sin(p * w) if j % 2 == 0 else np.cos(p * w)
  np.testing.assert_allclose(table, expected, atol=1e-6)
  # e.g. position 1 of an 8-wide table: sin(1), cos(1), sin(0.1), cos(0.1), ...
  if features == 8:
    np.testing.assert_allclose(table[1, :4], [np.sin(1), np.cos(1), np.sin(.1), np.cos(.1)],
                               atol=1e-6)


def test_default_positions_are_lras_table():
  """The embedder adds exactly that table (the CLS slot taking position 0) to the tokens."""
  embedder = Embedder(vocab_size=16, features=16, max_len=12, prepend_cls=True)  # default positions
  b = batch()
  params = embedder.init(jax.random.key(0), b["inputs"], b["mask"])
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, params)  # token and CLS vectors all zero
  x, _ = embedder.apply(zeroed, b["inputs"], b["mask"])
  np.testing.assert_allclose(x[0], sinusoidal_table(13, 16), atol=1e-6)
  np.testing.assert_allclose(x[0, 1, :2], [np.sin(1), np.cos(1)], atol=1e-6)


def _is_xavier_uniform(kernel, fan_in, fan_out):
  limit = np.sqrt(6.0 / (fan_in + fan_out))
  values = np.asarray(kernel).ravel()
  return np.abs(values).max() <= limit and np.abs(values).max() > 0.9 * limit and (
      abs(values.var() - limit ** 2 / 3) < 0.2 * limit ** 2 / 3)


def test_attention_projections_are_lras():
  # LRA: SelfAttention(bias=False, kernel_init=xavier_uniform) -> q/k/v/out DenseGeneral
  # without bias, Xavier-uniform over the flattened [in, heads * head_dim] kernel.
  model, _ = tiny_model(emb_dim=64, qkv_dim=64, num_heads=4, mlp_dim=64)
  params = model.init(jax.random.key(0), batch())["params"]
  attention = params["encoder"]["block_0"]["attention"]
  for name in ("query", "key", "value", "out"):
    assert set(attention[name]) == {"kernel"}, name  # no bias
    kernel = attention[name]["kernel"]
    assert _is_xavier_uniform(kernel, 64, 64), name
  assert attention["query"]["kernel"].shape == (64, 4, 16)


def test_feed_forward_init_is_lras():
  # LRA's MlpBlock: xavier_uniform kernels, biases normal(stddev=1e-6) (not zero).
  model, _ = tiny_model(emb_dim=64, qkv_dim=64, num_heads=4, mlp_dim=128)
  ffn = model.init(jax.random.key(0), batch())["params"]["encoder"]["block_0"]["ffn"]
  assert _is_xavier_uniform(ffn["in"]["kernel"], 64, 128)
  assert _is_xavier_uniform(ffn["out"]["kernel"], 128, 64)
  for name in ("in", "out"):
    bias = np.asarray(ffn[name]["bias"])
    assert np.all(bias != 0) and np.abs(bias).max() < 1e-5 and 2e-7 < bias.std() < 5e-6


def test_exact_attention_matches_jax_reference():
  keys = jax.random.split(jax.random.key(0), 3)
  q, k, v = (jax.random.normal(key, (2, 10, 2, 8)) for key in keys)
  mask = jnp.arange(10)[None] < jnp.array([[10], [6]])
  for causal in (False, True):
    ours = softmax_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)
    ref = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :] & mask[:, None, :, None],
                                       is_causal=causal)
    valid = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(ours)[valid], np.asarray(ref)[valid], atol=1e-5)


def test_bad_config_values_are_named():
  with pytest.raises(ValueError, match="config.model.pooling"):
    tiny_model(pooling="MAX")
  model, _ = tiny_model(positions="rotary")
  with pytest.raises(ValueError, match="config.model.positions"):
    model.init(jax.random.key(0), batch())
  model, _ = tiny_model(qkv_dim=15)
  with pytest.raises(ValueError, match="qkv_dim=15 is not divisible"):
    model.init(jax.random.key(0), batch())


def test_too_long_input_is_an_error():
  model, _ = tiny_model()
  long = {"inputs": jnp.ones((1, 20), jnp.int32), "mask": jnp.ones((1, 20), bool)}
  with pytest.raises(ValueError, match="exceeds config.model.max_len"):
    model.init(jax.random.key(0), long)


def test_block_options_from_config_are_honoured():
  plain, _ = tiny_model()
  b = batch()
  params = plain.init(jax.random.key(0), b)
  chunked, _ = tiny_model(ffn_chunk_size=4)
  np.testing.assert_allclose(chunked.apply(params, b)[0], plain.apply(params, b)[0], atol=1e-5)


def _layer_norm(x, p):  # flax.linen.LayerNorm: epsilon 1e-6, over the features
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / jnp.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def _gelu(x):  # tanh form, as LRA's
  return 0.5 * x * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def test_reversible_config_builds_revnet_residuals_with_matching_gradients():
  """config.model.reversible=True through the built classifier: two streams x1 = x2 = x,
  y1 = x1 + F(x2), y2 = x2 + G(y1) per layer (Reformer sec. 3), output (y1 + y2) / 2, written
  here with the model's own parameters (F: the attention branch module; G: LayerNorm, Dense,
  gelu, Dense, by hand); the model's gradients (its custom backward pass that inverts the
  layers) must equal plain autodiff of that formula."""
  model, _ = tiny_model(reversible=True, num_layers=2, pooling="MEAN")
  b = batch()
  params = model.init(jax.random.key(0), b)["params"]
  encoder = params["encoder"]
  assert "reversible" in encoder and "block_0" not in encoder
  mask = b["mask"]
  keep = mask[..., None]

  def by_hand(params):
    enc = params["encoder"]
    x, _ = Embedder(vocab_size=16, features=16, max_len=12).apply(
        {"params": enc["embed"]}, b["inputs"], mask)
    x1 = x2 = x
    for i in range(2):
      f = AttentionBranch(num_heads=2, qkv_dim=16, layer=i, max_len=12)
      x1 = x1 + f.apply({"params": enc["reversible"][f"attention_{i}"]}, x2, mask)
      g = enc["reversible"][f"ffn_{i}"]
      h = _layer_norm(x1, g["ffn_norm"])
      h = _gelu(h @ g["ffn"]["in"]["kernel"] + g["ffn"]["in"]["bias"])
      h = h @ g["ffn"]["out"]["kernel"] + g["ffn"]["out"]["bias"]
      x2 = x2 + jnp.where(keep, h, 0.0)
    hidden = _layer_norm(jnp.where(keep, (x1 + x2) / 2, 0.0), enc["final_norm"])
    pooled = (hidden * keep).sum(1) / keep.sum(1)
    head = params["head"]
    h = jax.nn.relu(pooled @ head["hidden"]["kernel"] + head["hidden"]["bias"])
    return h @ head["logits"]["kernel"] + head["logits"]["bias"]

  weights = jax.random.normal(jax.random.key(1), (2, 10))
  built = lambda p: model.apply({"params": p}, b)[0]
  np.testing.assert_allclose(built(params), by_hand(params), atol=1e-5, rtol=1e-5)
  grads = jax.grad(lambda p: (built(p) * weights).sum())(params)
  expected = jax.grad(lambda p: (by_hand(p) * weights).sum())(params)
  jax.tree_util.tree_map(lambda a, e: np.testing.assert_allclose(a, e, atol=2e-5, rtol=1e-3),
                         grads, expected)
  reversible = grads["encoder"]["reversible"]
  assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree_util.tree_leaves(reversible))


def _loss_and_grads(model, variables, b, mutable):
  """Cross-entropy against fixed labels, its parameter gradients and the updated state, in
  training mode (dropout on, BatchNorm's batch statistics), one jit."""
  labels = jnp.arange(b["inputs"].shape[0]) % 10

  def loss(params):
    out, state = model.apply({**variables, "params": params}, b, deterministic=False,
                             rngs={"dropout": jax.random.key(7)}, mutable=mutable)
    logits = out[0]
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1).mean(), state

  return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_remat_gives_the_same_loss_gradients_and_batch_statistics(norm):
  """config.model.remat=True wraps each block in nn.remat: the same parameters (same tree), and
  with dropout on (one rng) and BatchNorm's mutable statistics, the same loss, gradients and
  updated statistics as without it (float32, 1e-6)."""
  b = batch()
  options = dict(num_layers=2, norm=norm, dropout_rate=0.3, attention_dropout_rate=0.3)
  plain, _ = tiny_model(**options)
  remat, _ = tiny_model(remat=True, **options)
  variables = jax.jit(plain.init)(jax.random.key(0), b)
  assert (jax.tree_util.tree_structure(jax.eval_shape(remat.init, jax.random.key(0), b))
          == jax.tree_util.tree_structure(variables))
  mutable = ["batch_stats"] if norm == "batch" else []
  assert ("batch_stats" in variables) == (norm == "batch")
  (loss, state), grads = _loss_and_grads(plain, variables, b, mutable)
  (loss_r, state_r), grads_r = _loss_and_grads(remat, variables, b, mutable)
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6, atol=1e-6)
  jax.tree_util.tree_map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6),
                         (grads_r, state_r), (grads, state))
  assert all(np.abs(np.asarray(g)).max() > 0 for g in jax.tree_util.tree_leaves(grads))
  # the dropout is on: another rng gives another loss
  logits = jax.jit(lambda rng: plain.apply(variables, b, deterministic=False,
                                           rngs={"dropout": rng}, mutable=mutable)[0][0])
  assert not np.allclose(logits(jax.random.key(8)), logits(jax.random.key(7)))


def test_remat_keeps_only_the_blocks_inputs_for_the_backward_pass():
  """4 layers at length 256: the residuals the forward pass keeps for the backward pass (the
  arrays held by `jax.vjp`'s backward function, their shapes traced by `jax.eval_shape`;
  deterministic, not a timing: 18.0 MB without remat, 0.32 MB with) shrink from every
  block's activations (attention weights, dropout masks, feed-forward hiddens) to about the
  blocks' inputs, parameters and the head's own.

  Not XLA's compiled temporary memory: XLA:CPU schedules the recomputation of every block
  ahead of the backward pass (its scheduler does not keep JAX's optimization barrier's order),
  so on this backend `memory_analysis()` reports no saving (4 layers, L=256: 11.0 MB without,
  11.7 MB with remat); GPU and TPU schedulers keep the order."""
  length = 256
  b = {"inputs": jnp.ones((2, length), jnp.int32), "mask": jnp.ones((2, length), bool)}

  def saved_bytes(remat):
    config = transformer_listops.get_config("tiny")
    config.model.num_layers, config.model.remat, config.model.pooling = 4, remat, "MEAN"
    model = build_model(config.model, vocab_size=16, num_classes=10, max_len=length)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), b))["params"]
    loss = lambda p: model.apply({"params": p}, b, deterministic=False,
                                 rngs={"dropout": jax.random.key(1)})[0].sum()
    backward = jax.eval_shape(lambda p: jax.vjp(loss, p)[1], params)  # shapes only
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(backward)
               if hasattr(leaf, "dtype"))

  plain, remat = saved_bytes(False), saved_bytes(True)
  block_inputs = 4 * 2 * length * 16 * 4  # 4 blocks, batch 2, emb 16, float32
  assert remat < 0.05 * plain, (remat, plain)
  assert remat >= block_inputs, (remat, block_inputs)


def test_remat_with_reversible_layers_is_a_build_time_error():
  with pytest.raises(ValueError, match="remat=True with config.model.reversible=True"):
    tiny_model(remat=True, reversible=True)


def test_remat_reaches_the_dual_encoders_shared_encoder():
  """Retrieval's two towers share one Encoder: remat wraps its blocks there too (same params,
  same loss and gradients)."""
  config = transformer_listops.get_config("tiny")
  config.model.num_layers = 2
  b = batch()
  pair = {**b, "inputs2": b["inputs"][::-1], "mask2": b["mask"][::-1]}
  models = []
  for remat in (False, True):
    config.model.remat = remat
    models.append(build_model(config.model, vocab_size=16, num_classes=3, max_len=12, pair=True))
  assert models[1].encoder.remat and not models[0].encoder.remat
  variables = jax.jit(models[0].init)(jax.random.key(0), pair)
  results = [_loss_and_grads(m, variables, pair, []) for m in models]
  (loss, _), grads = results[0]
  (loss_r, _), grads_r = results[1]
  np.testing.assert_allclose(loss_r, loss, rtol=1e-6, atol=1e-6)
  jax.tree_util.tree_map(lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6),
                         grads_r, grads)
