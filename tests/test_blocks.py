"""The one block's options (config.model.norm / prenorm / ffn) against their formulas, written
here with the block's own parameters, and BatchNorm end to end (batch statistics in training,
running averages saved, restored and used in evaluation)."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import train
from models.attention.base import MultiHeadAttention
from models.blocks import EncoderBlock, Encoder
from tests.test_train import tiny_config

FEATURES, LENGTH = 8, 6


def block(**options):
  return EncoderBlock(num_heads=2, qkv_dim=FEATURES, mlp_dim=16, max_len=LENGTH, **options)


def data(seed=0):
  x = jax.random.normal(jax.random.key(seed), (3, LENGTH, FEATURES))
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[LENGTH], [4], [LENGTH]])
  return x, mask


def layer_norm(x, p):  # flax.linen.LayerNorm: epsilon 1e-6
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-6) * p["scale"] + p["bias"]


def attention(params, x, mask):
  return MultiHeadAttention(num_heads=2, qkv_dim=FEATURES, max_len=LENGTH).apply(
      {"params": params}, x, mask)


def gelu(x):
  return jax.nn.gelu(x, approximate=True)


@pytest.mark.parametrize("ffn", ["glu", "half_glu1", "half_glu2", "none"])
def test_post_norm_with_an_output_stage_and_no_feed_forward(ffn):
  x, mask = data()
  module = block(prenorm=False, ffn=ffn)
  variables = module.init(jax.random.key(1), x, mask)
  p = variables["params"]
  assert "ffn" not in p and "ffn_norm" not in p
  y = attention(p["attention"], x, mask)
  if ffn != "none":
    stage, h = p["output_stage"], gelu(y)
  if ffn == "glu":
    ab = h @ stage["glu"]["kernel"] + stage["glu"]["bias"]
    y = ab[..., :FEATURES] * jax.nn.sigmoid(ab[..., FEATURES:])
  elif ffn in ("half_glu1", "half_glu2"):
    gate = jax.nn.sigmoid(h @ stage["gate"]["kernel"] + stage["gate"]["bias"])
    y = (h if ffn == "half_glu1" else y) * gate
  expected = np.where(mask[..., None], layer_norm(x + y, p["attention_norm"]), 0.0)
  np.testing.assert_allclose(module.apply(variables, x, mask), expected, atol=1e-5, rtol=1e-5)


def test_post_norm_with_the_feed_forward():
  x, mask = data()
  module = block(prenorm=False)
  variables = module.init(jax.random.key(1), x, mask)
  p = variables["params"]
  h = layer_norm(x + attention(p["attention"], x, mask), p["attention_norm"])
  f = p["ffn"]
  ffn = gelu(h @ f["in"]["kernel"] + f["in"]["bias"]) @ f["out"]["kernel"] + f["out"]["bias"]
  expected = np.where(mask[..., None], layer_norm(h + ffn, p["ffn_norm"]), 0.0)
  np.testing.assert_allclose(module.apply(variables, x, mask), expected, atol=1e-5, rtol=1e-5)


def batch_norm_block():
  return block(norm="batch", ffn="none")


def test_batch_norm_uses_the_real_tokens_statistics_in_training():
  x, mask = data()
  module = batch_norm_block()
  variables = module.init(jax.random.key(1), x, mask)
  p, stats = variables["params"], variables["batch_stats"]["attention_norm"]
  np.testing.assert_array_equal(stats["mean"], 0.0)
  out, updates = module.apply(variables, x, mask, deterministic=False, mutable=["batch_stats"])
  real = np.asarray(x)[np.asarray(mask)]
  mean, var = real.mean(0), real.var(0)
  normed = (x - mean) / np.sqrt(var + 1e-5) * p["attention_norm"]["scale"] + p[
      "attention_norm"]["bias"]
  expected = np.where(mask[..., None], x + attention(p["attention"], normed, mask), 0.0)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)
  new = updates["batch_stats"]["attention_norm"]
  np.testing.assert_allclose(new["mean"], 0.1 * mean, atol=1e-6)   # momentum 0.9 from 0
  np.testing.assert_allclose(new["var"], 0.9 + 0.1 * var, atol=1e-5)
  # Padding moves neither the statistics nor the real outputs.
  noisy = jnp.where(mask[..., None], x, 50.0)
  out2, updates2 = module.apply(variables, noisy, mask, deterministic=False,
                                mutable=["batch_stats"])
  np.testing.assert_allclose(out2, out, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(updates2["batch_stats"]["attention_norm"]["mean"], new["mean"],
                             atol=1e-6)


def test_batch_norm_evaluation_uses_the_running_averages():
  x, mask = data()
  module = batch_norm_block()
  variables = module.init(jax.random.key(1), x, mask)
  variables = {**variables, "batch_stats": {"attention_norm": {
      "mean": jnp.full(FEATURES, 0.5), "var": jnp.full(FEATURES, 4.0)}}}
  p = variables["params"]
  normed = (x - 0.5) / np.sqrt(4.0 + 1e-5) * p["attention_norm"]["scale"] + p[
      "attention_norm"]["bias"]
  expected = np.where(mask[..., None], x + attention(p["attention"], normed, mask), 0.0)
  np.testing.assert_allclose(module.apply(variables, x, mask), expected, atol=1e-5, rtol=1e-5)
  # One example's evaluation does not depend on the others in its batch.
  np.testing.assert_allclose(module.apply(variables, x[:1], mask[:1])[0],
                             module.apply(variables, x, mask)[0], atol=1e-6)


def test_the_final_norm_is_there_with_pre_norm_only():
  tokens, mask = jnp.ones((2, LENGTH), jnp.int32), jnp.ones((2, LENGTH), bool)
  for prenorm in (True, False):
    encoder = Encoder(vocab_size=5, emb_dim=FEATURES, num_heads=2, num_layers=1,
                      qkv_dim=FEATURES, mlp_dim=16, max_len=LENGTH, prenorm=prenorm)
    params = encoder.init(jax.random.key(0), tokens, mask)["params"]
    assert ("final_norm" in params) == prenorm


def test_bad_block_options_name_the_field():
  x, mask = data()
  for options, field in (({"norm": "group"}, "config.model.norm"),
                         ({"ffn": "swiglu"}, "config.model.ffn")):
    with pytest.raises(ValueError, match=field):
      block(**options).init(jax.random.key(0), x, mask)
  encoder = Encoder(vocab_size=5, emb_dim=FEATURES, num_heads=2, num_layers=1, qkv_dim=FEATURES,
                    mlp_dim=16, max_len=LENGTH, reversible=True, norm="batch")
  with pytest.raises(ValueError, match="reversible=True has LRA's block only"):
    encoder.init(jax.random.key(0), jnp.ones((1, LENGTH), jnp.int32), jnp.ones((1, LENGTH), bool))


def test_batch_norm_trains_checkpoints_and_resumes(tmp_path, cache_dir, capsys):
  """A BatchNorm run: the running averages move in training, are saved, restored on resume and
  used by evaluation (the resumed run ends where an uninterrupted one does)."""
  config = tiny_config(cache_dir)
  config.model.norm, config.model.prenorm, config.model.ffn = "batch", False, "glu"
  whole = train.train_and_evaluate(config, tmp_path / "whole")
  # The same run killed after its step-8 checkpoint: its step-12 checkpoint and results gone.
  shutil.copytree(tmp_path / "whole", tmp_path / "cut")
  shutil.rmtree(tmp_path / "cut" / "checkpoints" / "12")
  (tmp_path / "cut" / "results.json").unlink()
  resumed = train.train_and_evaluate(config, tmp_path / "cut")
  assert "resuming from step 8" in capsys.readouterr().out
  for split in ("validation", "test"):
    assert resumed["splits"][split] == whole["splits"][split]
  task = train.load_task(config)
  state = train.create_state(config, task, train.model_for(config, task))
  restored, _, step = train.RunCheckpoints(tmp_path / "whole", 2).restore("latest", state)
  assert step == 12
  moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), restored.batch_stats,
                                 state.batch_stats)
  assert jax.tree_util.tree_leaves(moved) and all(jax.tree_util.tree_leaves(moved))


@pytest.mark.parametrize("norm", ["layer", "batch"])
@pytest.mark.parametrize("ffn", ["mlp", "glu", "half_glu1", "half_glu2", "none"])
def test_every_block_option_trains_in_bfloat16_with_dropout(norm, ffn):
  """bfloat16 in and out, finite outputs and float32 parameter gradients, with dropout, in
  training (post-norm here; pre-norm is every other test's default). Causal masking belongs to
  the mixer, whose own tests walk it."""
  x, mask = data()
  x = x.astype(jnp.bfloat16)
  module = EncoderBlock(num_heads=2, qkv_dim=FEATURES, mlp_dim=16, max_len=LENGTH, norm=norm,
                        prenorm=False, ffn=ffn, dropout_rate=0.1, attention_dropout_rate=0.1,
                        dtype=jnp.bfloat16)

  @jax.jit
  def train(x):
    variables = module.init(jax.random.key(0), x, mask)

    def loss(params):
      out, _ = module.apply({**variables, "params": params}, x, mask, deterministic=False,
                            rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"])
      return out.astype(jnp.float32).sum(), out

    return jax.value_and_grad(loss, has_aux=True)(variables["params"])

  (_, out), grads = train(x)
  assert out.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(out.astype(jnp.float32))))
  for grad in jax.tree_util.tree_leaves(grads):
    assert grad.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("activation,act", [("gelu", gelu), ("silu", jax.nn.silu)])
def test_gated_feed_forward_is_shazeers_glu_variant(activation, act):
  """ffn="gated": GEGLU with gelu, SwiGLU with silu (Shazeer 2020 eq. 6), no biases, after the
  attention sublayer's residual; here with norm="none", so the formula has no LayerNorm."""
  x, mask = data()
  module = block(ffn="gated", activation=activation, norm="none")
  variables = module.init(jax.random.key(2), x, mask)
  p = variables["params"]
  assert set(p["ffn"]) == {"gate", "in", "out"}
  assert all(set(layer) == {"kernel"} for layer in p["ffn"].values())  # no biases
  assert not any("norm" in name for name in p)  # norm="none": no normalisation layer
  h = x + attention(p["attention"], x, mask)
  f = p["ffn"]
  gated = act(h @ f["gate"]["kernel"]) * (h @ f["in"]["kernel"])
  expected = np.where(mask[..., None], h + gated @ f["out"]["kernel"], 0.0)
  np.testing.assert_allclose(module.apply(variables, x, mask), expected, atol=1e-5, rtol=1e-5)


def test_rezero_block_starts_as_the_identity_and_learns_its_alpha():
  """ReZero (Bachlechner et al. 2020): x + alpha * f(x) with alpha = 0 at init, one alpha per
  block for both sublayers; the gradient reaches alpha, and with alpha set the block is
  x + alpha*attn(x), then + alpha*ffn(.)."""
  x, mask = data()
  module = block(rezero=True, norm="none")
  variables = module.init(jax.random.key(3), x, mask)
  p = variables["params"]
  assert p["rezero_alpha"].shape == () and float(p["rezero_alpha"]) == 0.0
  np.testing.assert_array_equal(module.apply(variables, x, mask), np.where(mask[..., None], x, 0))
  grad = jax.grad(lambda q: module.apply({"params": q}, x, mask).sum())(p)
  assert abs(float(grad["rezero_alpha"])) > 1e-3
  alpha = 0.5
  q = dict(p, rezero_alpha=jnp.asarray(alpha))
  h = x + alpha * attention(p["attention"], x, mask)
  f = p["ffn"]
  mlp = gelu(h @ f["in"]["kernel"] + f["in"]["bias"]) @ f["out"]["kernel"] + f["out"]["bias"]
  expected = np.where(mask[..., None], h + alpha * mlp, 0.0)
  np.testing.assert_allclose(module.apply({"params": q}, x, mask), expected, atol=1e-5,
                             rtol=1e-5)


def test_block_option_errors_name_the_field():
  x, mask = data()
  with pytest.raises(ValueError, match=r"config.model.norm='group'.*'none'"):
    block(norm="group").init(jax.random.key(0), x, mask)
  with pytest.raises(ValueError, match=r"config.model.ffn='geglu'.*'gated'"):
    block(ffn="geglu").init(jax.random.key(0), x, mask)
  encoder = Encoder(vocab_size=5, emb_dim=FEATURES, num_heads=2, num_layers=1, qkv_dim=FEATURES,
                    mlp_dim=16, max_len=LENGTH, reversible=True, rezero=True)
  tokens = jnp.zeros((1, LENGTH), jnp.int32)
  with pytest.raises(ValueError, match=r"reversible=True has LRA's block only.*rezero=True"):
    encoder.init(jax.random.key(0), tokens, tokens == 0)


def test_the_encoder_carries_lunas_packed_sequence_from_block_to_block():
  """A mixer registered memory=True (Luna) gets block i-1's next memory in block i (block 0
  builds the first one itself): block 1's captured output equals the block applied to block 0's
  (x, memory), and differs with another memory."""
  kwargs = {"packed_length": 3, "num_heads": 2}
  encoder = Encoder(vocab_size=7, emb_dim=FEATURES, num_heads=2, num_layers=2, qkv_dim=FEATURES,
                    mlp_dim=16, max_len=LENGTH, attention="luna", attention_kwargs=kwargs,
                    dropout_rate=0.0, attention_dropout_rate=0.0)
  tokens = jax.random.randint(jax.random.key(0), (2, LENGTH), 0, 7)
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[LENGTH], [4]])
  variables = encoder.init(jax.random.key(1), tokens, mask)
  _, state = encoder.apply(variables, tokens, mask, capture_intermediates=True)
  captured = state["intermediates"]
  x1, memory1 = captured["block_0"]["__call__"][0]
  x2, memory2 = captured["block_1"]["__call__"][0]
  assert memory1.shape == (2, 3, FEATURES)
  second = block(attention="luna", attention_kwargs=kwargs)
  params = {"params": variables["params"]["block_1"]}
  y, next_memory = second.apply(params, x1, mask, memory=memory1)
  np.testing.assert_allclose(y, x2, atol=1e-6)
  np.testing.assert_allclose(next_memory, memory2, atol=1e-6)
  # Only block 0 owns the first P; the later blocks read what they are given.
  assert "packed_embedding" in variables["params"]["block_0"]["attention"]["mixer"]
  assert "packed_embedding" not in variables["params"]["block_1"]["attention"]["mixer"]
  other, _ = second.apply(params, x1, mask, memory=jnp.zeros_like(memory1) + 1.0)
  assert np.abs(np.asarray(other) - np.asarray(x2)).max() > 1e-4


def test_reversible_layers_refuse_a_mixer_with_training_state():
  """Routing keeps its EMA centroids in batch_stats; reversible layers apply each branch with
  its parameters only, so the combination is refused when the model is built."""
  encoder = Encoder(vocab_size=5, emb_dim=FEATURES, num_heads=2, num_layers=1, qkv_dim=FEATURES,
                    mlp_dim=16, max_len=LENGTH, reversible=True, attention="routing",
                    attention_kwargs={"num_clusters": 2})
  tokens = jnp.zeros((1, LENGTH), jnp.int32)
  with pytest.raises(ValueError, match=r"reversible=True: attention 'routing' keeps training"):
    encoder.init(jax.random.key(0), tokens, tokens == 0)


@pytest.mark.parametrize("name,kwargs", [("luna", {"packed_length": 3}),
                                         ("isab", {"num_inducing": 3})])
def test_sequence_mixers_with_heads_take_the_models_head_count(name, kwargs):
  """Luna's and ISAB's heads are config.model.num_heads (a context field the base passes), so
  a preset that changes the model's heads changes theirs; their configs carry no copy."""
  import importlib  # pylint: disable=import-outside-toplevel
  for preset in (None, "quick", "tiny"):
    config = importlib.import_module(f"configs.{name}_listops").get_config(preset)
    assert "num_heads" not in config.model.attention_kwargs
  x, mask = data()
  block(attention=name, attention_kwargs=kwargs).init(jax.random.key(0), x, mask)  # 2 heads
  with pytest.raises(ValueError, match="num_heads=3 does not divide"):
    # qkv_dim 12 passes the base's own check; the mixer's width is x's, 8, which 3 does not divide
    EncoderBlock(num_heads=3, qkv_dim=12, mlp_dim=16, max_len=LENGTH, attention=name,
                 attention_kwargs=kwargs).init(jax.random.key(0), x, mask)
