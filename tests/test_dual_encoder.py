"""Dual encoder (LRA Retrieval): shapes, ONE shared encoder for both towers, LRA's defaults
(no CLS token per tower, position-0 pooling, [u, v] head), the "nli" head [u, v, u*v, u-v] and
its symmetries, padding invariance of each tower, every attention variant."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import transformer_retrieval
from models import build_model
from models.attention import registry
from models.dual_encoder import interaction_features
from tests.attention_cases import LENGTH, SMALL_KWARGS

VOCAB, CLASSES = 20, 2


def model_config(attention="transformer", pooling="CLS", interaction="concat",
                 tower_cls_token=False, **kwargs):
  config = ml_collections.ConfigDict(transformer_retrieval.get_config("tiny").model.to_dict())
  config.attention, config.pooling = attention, pooling
  config.interaction, config.tower_cls_token = interaction, tower_cls_token
  config.attention_kwargs = ml_collections.ConfigDict(kwargs)
  config.emb_dim, config.num_heads, config.qkv_dim, config.mlp_dim = 16, 2, 16, 32
  config.dropout_rate = config.attention_dropout_rate = 0.0
  return config


def pair_batch(seed=0, batch=3, length=LENGTH, lengths=(16, 9, 4), lengths2=(5, 16, 12)):
  rng = np.random.default_rng(seed)
  mask = np.arange(length)[None] < np.asarray(lengths)[:, None]
  mask2 = np.arange(length)[None] < np.asarray(lengths2)[:, None]
  return {"inputs": jnp.asarray(rng.integers(1, VOCAB, (batch, length)) * mask),
          "mask": jnp.asarray(mask),
          "inputs2": jnp.asarray(rng.integers(1, VOCAB, (batch, length)) * mask2),
          "mask2": jnp.asarray(mask2)}


def build(config, max_len=LENGTH + 8):
  return build_model(config, vocab_size=VOCAB, num_classes=CLASSES, max_len=max_len, pair=True)


def swapped(batch):
  return {"inputs": batch["inputs2"], "mask": batch["mask2"], "inputs2": batch["inputs"],
          "mask2": batch["mask"]}


@pytest.fixture(scope="module")
def transformer():
  model = build(model_config())
  params = model.init(jax.random.key(0), pair_batch())["params"]
  return model, params


def test_shapes_and_one_shared_parameter_set(transformer):
  model, params = transformer
  logits, aux = model.apply({"params": params}, pair_batch())
  assert logits.shape == (3, CLASSES) and aux["pooled"].shape == aux["pooled2"].shape == (3, 16)
  assert set(params) == {"encoder", "head"}  # no second tower's weights
  single = build_model(model_config(), vocab_size=VOCAB, num_classes=CLASSES,
                       max_len=LENGTH + 8, pair=False)
  single_params = jax.eval_shape(single.init, jax.random.key(0), pair_batch())["params"]
  count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  # the same encoder as a single-input model's, less that model's CLS vector (16)
  assert count(params["encoder"]) == count(single_params["encoder"]) - 16
  # LRA's default head: Dense(mlp) on [u, v] (2d features), Dense(mlp/2), Dense(classes)
  head = params["head"]
  assert head["hidden"]["kernel"].shape == (2 * 16, 32)
  assert head["hidden2"]["kernel"].shape == (32, 16)
  assert head["logits"]["kernel"].shape == (16, CLASSES)


def test_retrieval_defaults_are_lras():
  # LRA (transformer.py TransformerDualEncoder + common_layers.classifier_head_dual, called by
  # matching/train.py without `interaction`): no CLS token in either tower, "CLS" pooling reads
  # position 0 (the first byte), and the head sees [u, v].
  full = transformer_retrieval.get_config().model
  assert (full.pooling, full.interaction, full.tower_cls_token) == ("CLS", "concat", False)
  model = build(model_config())
  batch = pair_batch()
  params = model.init(jax.random.key(0), batch)["params"]
  assert "cls" not in params["encoder"]["embed"]
  logits, aux = model.apply({"params": params}, batch)
  hidden, _ = model.apply({"params": params}, batch["inputs"], batch["mask"],
                          method=lambda m, tokens, mask: m.encoder(tokens, mask))
  assert hidden.shape == (3, LENGTH, 16)  # nothing prepended
  np.testing.assert_allclose(aux["pooled"], hidden[:, 0], atol=1e-6)
  u, v = aux["pooled"], aux["pooled2"]
  head = lambda x, layer: x @ params["head"][layer]["kernel"] + params["head"][layer]["bias"]
  h = jax.nn.relu(head(jnp.concatenate([u, v], -1), "hidden"))
  expected = head(jax.nn.relu(head(h, "hidden2")), "logits")
  np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_tower_cls_token_prepends_a_token():
  model = build(model_config(tower_cls_token=True))
  batch = pair_batch()
  params = model.init(jax.random.key(0), batch)["params"]
  assert params["encoder"]["embed"]["cls"].shape == (1, 1, 16)
  hidden, _ = model.apply({"params": params}, batch["inputs"], batch["mask"],
                          method=lambda m, tokens, mask: m.encoder(tokens, mask))
  assert hidden.shape == (3, LENGTH + 1, 16)
  with pytest.raises(ValueError, match="tower_cls_token=True.*pooling is 'MEAN'"):
    build(model_config(pooling="MEAN", tower_cls_token=True))


def test_nli_interaction_and_unknown_values():
  model = build(model_config(interaction="nli"))
  params = jax.eval_shape(model.init, jax.random.key(0), pair_batch())["params"]
  assert params["head"]["hidden"]["kernel"].shape == (4 * 16, 32)
  with pytest.raises(ValueError, match=r"config.model.interaction='dot'; expected one of "
                                       r"'concat', 'nli'"):
    build(model_config(interaction="dot"))


def test_each_tower_is_the_same_function(transformer):
  model, params = transformer
  batch = pair_batch()
  _, aux = model.apply({"params": params}, batch)
  _, aux_swapped = model.apply({"params": params}, swapped(batch))
  np.testing.assert_allclose(aux_swapped["pooled"], aux["pooled2"], atol=1e-6)
  np.testing.assert_allclose(aux_swapped["pooled2"], aux["pooled"], atol=1e-6)
  same = dict(batch, inputs2=batch["inputs"], mask2=batch["mask"])
  _, aux_same = model.apply({"params": params}, same)
  np.testing.assert_allclose(aux_same["pooled"], aux_same["pooled2"], atol=1e-6)


def test_nli_head_symmetries():
  model = build(model_config(interaction="nli"))
  params = model.init(jax.random.key(0), pair_batch())["params"]
  u, v = jax.random.normal(jax.random.key(1), (2, 3, 16))
  np.testing.assert_array_equal(interaction_features(u, v), jnp.concatenate([u, v], -1))
  features = interaction_features(u, v, "nli")
  features_swapped = interaction_features(v, u, "nli")
  np.testing.assert_allclose(features_swapped[:, 32:48], features[:, 32:48])   # u*v symmetric
  np.testing.assert_allclose(features_swapped[:, 48:], -features[:, 48:])      # u-v antisymmetric
  batch = pair_batch()
  logits = model.apply({"params": params}, batch)[0]
  logits_swapped = model.apply({"params": params}, swapped(batch))[0]
  assert not np.allclose(logits, logits_swapped, atol=1e-4)  # order matters in general
  # keep only the u*v rows of the first Dense: then the classifier is swap-invariant
  kernel = params["head"]["hidden"]["kernel"]
  keep = jnp.zeros(64, bool).at[32:48].set(True)
  product_only = jax.tree_util.tree_map(lambda x: x, params)
  product_only["head"]["hidden"]["kernel"] = jnp.where(keep[:, None], kernel, 0.0)
  np.testing.assert_allclose(model.apply({"params": product_only}, batch)[0],
                             model.apply({"params": product_only}, swapped(batch))[0],
                             atol=1e-5)


@pytest.mark.parametrize("pooling", ["CLS", "MEAN"])
def test_padding_invariance_of_each_tower(pooling):
  model = build(model_config(pooling=pooling))
  batch = pair_batch()
  params = model.init(jax.random.key(0), batch)["params"]
  logits = model.apply({"params": params}, batch)[0]
  garbage = np.random.default_rng(3).integers(1, VOCAB, (3, LENGTH + 8))
  padded = {}
  for tokens, mask in (("inputs", "mask"), ("inputs2", "mask2")):
    # junk tokens at padded positions, and 8 more padded columns
    wide_mask = np.pad(np.asarray(batch[mask]), ((0, 0), (0, 8)))
    wide = np.where(wide_mask, np.pad(np.asarray(batch[tokens]), ((0, 0), (0, 8))), garbage)
    padded[tokens], padded[mask] = jnp.asarray(wide), jnp.asarray(wide_mask)
  np.testing.assert_allclose(model.apply({"params": params}, padded)[0], logits, atol=1e-5)


def test_needs_a_pair_batch(transformer):
  model, params = transformer
  batch = pair_batch()
  with pytest.raises(ValueError, match="inputs2"):
    model.apply({"params": params}, {"inputs": batch["inputs"], "mask": batch["mask"]})


@pytest.mark.parametrize("name", registry.names())
def test_every_attention_variant(name):
  """Builds and traces (no execution: each variant's numerics are tested in test_attention)."""
  model = build(model_config(name, pooling="MEAN", **SMALL_KWARGS.get(name, {})),
                max_len=LENGTH)
  (logits, aux), variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.key(0), pair_batch()))
  assert logits.shape == (3, CLASSES) and logits.dtype == jnp.float32
  assert aux["pooled"].shape == aux["pooled2"].shape == (3, 16)
  assert set(variables["params"]) == {"encoder", "head"}  # one encoder for both towers
