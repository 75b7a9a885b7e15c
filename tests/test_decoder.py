"""The decoder-only LM and the encoder-decoder (models/decoder.py) built from the shared stack:
causal no-leak through the whole model for every causal variant (forward and gradient), the
encoder-decoder's cross-attention, tied embeddings, and the build-time errors."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import transformer_listops
from models import build_model
from models.attention import registry
from tests.attention_cases import SMALL_KWARGS

LENGTH, VOCAB = 12, 11
CAUSAL = [n for n in registry.names() if registry.get(n).supports_causal]
EXACT = [n for n in CAUSAL if registry.get(n).causal_exact]


def model_config(attention="transformer", **fields):
  config = ml_collections.ConfigDict(transformer_listops.get_config("tiny").model.to_dict())
  small = dict(SMALL_KWARGS.get(attention, {}))
  if "num_heads" in small:
    config.num_heads = small.pop("num_heads")
  config.attention, config.attention_kwargs = attention, ml_collections.ConfigDict(small)
  config.emb_dim, config.qkv_dim, config.mlp_dim, config.num_layers = 16, 16, 32, 2
  config.dropout_rate = config.attention_dropout_rate = 0.0
  for key, value in fields.items():
    config[key] = value
  return config


def lm(attention="transformer", **fields):
  return build_model(model_config(attention, **fields), vocab_size=VOCAB, num_classes=VOCAB,
                     max_len=LENGTH, mode="lm")


def tokens(seed, batch=2, length=LENGTH):
  return jax.random.randint(jax.random.key(seed), (batch, length), 1, VOCAB)


def lm_batch(inputs):
  return {"inputs": inputs, "mask": jnp.ones(inputs.shape, bool)}


@pytest.mark.parametrize("name", CAUSAL)
def test_decoder_logits_at_t_do_not_depend_on_later_tokens(name):
  """Gradient: d logits[t] / d embedding[s] = 0 for s > t (every causal variant, two layers);
  forward: changing tokens after t leaves logits <= t unchanged (the exact ones; Reformer's and
  Routing's causal forms are approximate, registry causal_exact=False)."""
  model = lm(name)
  inputs = tokens(0)
  variables = model.init(jax.random.key(0), lm_batch(inputs))
  t = LENGTH // 2
  onehot = jax.nn.one_hot(inputs, VOCAB)

  def logits_at_t(onehot):
    params = variables["params"]
    table = params["decoder"]["embed"]["tokens"]["embedding"]

    def embed_hook(next_fun, args, kwargs, context):
      if context.module.name == "tokens" and context.method_name == "__call__":
        return jnp.einsum("blv,vd->bld", onehot, table)
      return next_fun(*args, **kwargs)

    import flax.linen as nn  # pylint: disable=import-outside-toplevel
    with nn.intercept_methods(embed_hook):
      logits, _ = model.apply(variables, lm_batch(inputs))
    return logits[:, t].sum()

  grad = np.abs(np.asarray(jax.jit(jax.grad(logits_at_t))(onehot)))
  past = grad[:, :t + 1].max()
  assert past > 0
  # FFT convolutions (H3, Hyena, ...) leave float32 round-off (~1e-8) where exact zeros would be
  assert grad[:, t + 1:].max() <= 1e-6 * past, f"{name}: gradient reaches tokens after {t}"
  if name in EXACT:
    changed = inputs.at[:, t + 1:].set(tokens(1)[:, t + 1:])
    forward = jax.jit(lambda inputs: model.apply(variables, lm_batch(inputs))[0])
    before, after = forward(inputs), forward(changed)
    assert np.abs(np.asarray(after[:, t + 1:] - before[:, t + 1:])).max() > 0
    np.testing.assert_allclose(after[:, :t + 1], before[:, :t + 1], atol=1e-5)


def seq2seq(attention="transformer", target_len=7, **fields):
  return build_model(model_config(attention, **fields), vocab_size=VOCAB, num_classes=VOCAB,
                     max_len=LENGTH, mode="seq2seq", target_len=target_len)


def pair_batch(source, target, source_len=LENGTH):
  return {"inputs": source, "mask": jnp.arange(LENGTH)[None] < source_len,
          "inputs2": target, "mask2": jnp.ones(target.shape, bool)}


def test_encoder_decoder_reads_the_source_through_cross_attention_and_is_causal():
  model = seq2seq(num_decoder_layers=3)
  source, target = tokens(0), tokens(2, length=7)
  variables = model.init(jax.random.key(0), pair_batch(source, target))
  decoder = variables["params"]["decoder"]
  assert {f"block_{i}" for i in range(3)} <= set(decoder)  # num_decoder_layers
  assert "cross_attention" in decoder["block_0"] and "block_2" not in variables["params"][
      "encoder"]
  logits, _ = model.apply(variables, pair_batch(source, target))
  assert logits.shape == (2, 7, VOCAB)
  other, _ = model.apply(variables, pair_batch(tokens(5), target))
  assert np.abs(np.asarray(other - logits)).max() > 1e-3  # every position sees the source
  changed = target.at[:, 4:].set(tokens(3, length=7)[:, 4:])
  moved, _ = model.apply(variables, pair_batch(source, changed))
  np.testing.assert_allclose(moved[:, :4], logits[:, :4], atol=1e-5)
  # The source's padding is invisible: tokens past its length do not move any logit.
  padded, _ = model.apply(variables, pair_batch(source.at[:, 9:].set(1), target, 9))
  short, _ = model.apply(variables, pair_batch(source, target, 9))
  np.testing.assert_allclose(padded, short, atol=1e-5)


def test_cross_attention_variant_is_configurable_and_checked():
  model = seq2seq(cross_attention="performer", cross_attention_kwargs={"num_features": 8})
  variables = model.init(jax.random.key(0), pair_batch(tokens(0), tokens(1, length=7)))
  cross = variables["params"]["decoder"]["block_0"]["cross_attention"]
  assert {"query", "key", "value", "out"} <= set(cross)
  # The field is used, not only accepted: the same parameters under exact cross attention
  # give other logits than under FAVOR+ (both have the same projections).
  batch = pair_batch(tokens(0), tokens(1, length=7))
  favor, _ = model.apply(variables, batch)
  exact, _ = seq2seq().apply(variables, batch)
  assert np.abs(np.asarray(favor - exact)).max() > 1e-3
  with pytest.raises(ValueError, match="does not support cross attention"):
    seq2seq(cross_attention="local")


def test_tied_embeddings_share_the_token_table():
  model = lm(tie_embeddings=True)
  variables = model.init(jax.random.key(0), lm_batch(tokens(0)))
  assert "head" not in variables["params"]
  table = variables["params"]["decoder"]["embed"]["tokens"]["embedding"]
  grads = jax.grad(lambda p: model.apply({"params": p}, lm_batch(tokens(0)))[0][:, -1, 3].sum())(
      variables["params"])
  # The output layer is the table: its gradient reaches the row of token 3 (never an input).
  assert np.abs(np.asarray(grads["decoder"]["embed"]["tokens"]["embedding"][3])).max() > 0
  assert table.shape == (VOCAB, 16)
  with pytest.raises(ValueError, match="tie_embeddings"):
    build_model(model_config(tie_embeddings=True), vocab_size=VOCAB, num_classes=5,
                max_len=LENGTH, mode="lm")


def test_a_decoder_needs_a_causal_variant():
  with pytest.raises(ValueError, match="has no causal form"):
    lm("linformer")


def test_transformer_xl_is_the_decoders_segment_recurrent_stack():
  """config.model.xl_segment_length > 0 builds Transformer-XL's stack (models/transformer_xl.py,
  tested there) as the decoder: causal, and decoding step by step equals its forward; fields it
  would ignore are refused."""
  from models import generate  # pylint: disable=import-outside-toplevel
  model = lm(xl_segment_length=4, xl_memory_length=4, positions="none")
  inputs = tokens(0)
  params = model.init(jax.random.key(0), lm_batch(inputs))["params"]
  attention = params["decoder"]["stack"]["block_0"]["attention"]
  assert {"content_bias", "position_bias", "position"} <= set(attention)  # u, v, W_{k,R}
  full, _ = model.apply({"params": params}, lm_batch(inputs))
  changed, _ = model.apply({"params": params}, lm_batch(inputs.at[:, 7:].set(1)))
  np.testing.assert_allclose(changed[:, :7], full[:, :7], atol=1e-5)
  stepped = generate.teacher_forced_logits(model, params, inputs)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  with pytest.raises(ValueError, match=r"would be ignored.*positions='none'"):
    lm(xl_segment_length=4, xl_memory_length=4)  # sinusoidal positions set
  with pytest.raises(ValueError, match="must divide the sequence length 12"):
    lm(xl_segment_length=5, positions="none")
  with pytest.raises(ValueError, match="decoder-only"):
    seq2seq(xl_segment_length=4, positions="none")
