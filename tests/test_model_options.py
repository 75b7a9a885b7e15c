"""Model options of the config through the built classifier: `causal`, `activation`,
`positions='none'`. Each is checked by what it must do, against formulas written here."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import defaults, transformer_listops
from models import build_model
from models.attention import registry
from models.blocks import FeedForward
from tests.attention_cases import SMALL_KWARGS

L = 10


def tiny_model(**overrides):
  config = transformer_listops.get_config("tiny")
  config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
  config.model.pooling = "MEAN"  # no CLS token: position t of the encoder is token t
  for key, value in overrides.items():
    setattr(config.model, key, value)
  return build_model(config.model, vocab_size=16, num_classes=10, max_len=L)


def tokens(seed=0, batch=2):
  return np.random.default_rng(seed).integers(1, 16, (batch, L)).astype(np.int32)


def encoder_states(model, params, inputs):
  """The encoder's per-token output `[b, l, d]` inside the classifier built from the config."""
  batch = {"inputs": jnp.asarray(inputs), "mask": jnp.ones(inputs.shape, bool)}
  _, state = model.apply(params, batch, capture_intermediates=lambda m, _: m.name == "encoder",
                         mutable=["intermediates"])
  hidden, _ = state["intermediates"]["encoder"]["__call__"][0]
  return np.asarray(hidden)


def init(model):
  batch = {"inputs": jnp.asarray(tokens()), "mask": jnp.ones((2, L), bool)}
  return model.init(jax.random.key(0), batch)


@pytest.mark.parametrize("causal", [True, False])
def test_causal_config_keeps_each_position_blind_to_later_tokens(causal):
  model = tiny_model(causal=causal)
  params = init(model)
  inputs = tokens(1)
  changed = inputs.copy()
  changed[:, 6:] = (changed[:, 6:] % 15) + 1  # every token from position 6 on is another one
  assert (changed[:, 6:] != inputs[:, 6:]).all()
  before, after = encoder_states(model, params, inputs), encoder_states(model, params, changed)
  later = np.abs(after[:, 6:] - before[:, 6:]).max(-1)
  assert (later > 1e-3).all()
  earlier = np.abs(after[:, :6] - before[:, :6]).max()
  if causal:  # positions 0..5 see only tokens 0..5
    assert earlier < 1e-5, earlier
  else:  # the control: without the causal mask the earlier positions see the change
    assert earlier > 1e-3


def gelu_tanh(x):  # LRA's MlpBlock: nn.gelu, the tanh approximation
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


FORMULAS = {"gelu": gelu_tanh, "relu": lambda x: np.maximum(x, 0.0),
            "silu": lambda x: x / (1 + np.exp(-x))}


def test_each_activation_name_gives_its_function_in_the_built_feed_forward():
  """From the config through the classifier: the FFN's output is Dense(act(Dense(x))) with the
  named activation, computed here from its own input and parameters."""
  outputs = {}
  for name, act in FORMULAS.items():
    model = tiny_model(activation=name)
    params = init(model)
    seen = []

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if isinstance(context.module, FeedForward) and context.method_name == "__call__":
        seen.append((np.asarray(args[0]), np.asarray(out)))
      return out

    with nn.intercept_methods(record):
      encoder_states(model, params, tokens(2))
    assert len(seen) == 1  # tiny: one block
    x, out = seen[0]
    ffn = jax.tree_util.tree_map(np.asarray, params["params"]["encoder"]["block_0"]["ffn"])
    hidden = act(x @ ffn["in"]["kernel"] + ffn["in"]["bias"])
    np.testing.assert_allclose(out, hidden @ ffn["out"]["kernel"] + ffn["out"]["bias"],
                               rtol=1e-4, atol=1e-5, err_msg=name)
    outputs[name] = out
  assert not np.allclose(outputs["gelu"], outputs["relu"], atol=1e-3)
  assert not np.allclose(outputs["gelu"], outputs["silu"], atol=1e-3)


def test_unknown_activation_is_named():
  model = tiny_model(activation="tanh")
  with pytest.raises(ValueError, match=r"config.model.activation='tanh'; expected one of "
                                       r"\['gelu', 'relu', 'silu'\]"):
    init(model)


@pytest.mark.parametrize("positions", ["none", "sinusoidal", "learned"])
def test_without_positions_the_encoder_is_permutation_equivariant(positions):
  """No positions, no causal mask, no CLS: permuting the tokens permutes the per-token states.
  With positions, it does not."""
  model = tiny_model(positions=positions)
  params = init(model)
  if positions == "learned":  # its init is normal(0.02): made large enough to matter
    params = jax.tree_util.tree_map(lambda x: x, params)
    embed = params["params"]["encoder"]["embed"]
    embed["positions"] = 50 * embed["positions"]
  inputs = tokens(3)
  order = np.random.default_rng(4).permutation(L)
  assert (inputs[:, order] != inputs).any()
  permuted_states = encoder_states(model, params, inputs[:, order])
  states_permuted = encoder_states(model, params, inputs)[:, order]
  if positions == "none":
    np.testing.assert_allclose(permuted_states, states_permuted, atol=1e-5)
  else:
    assert np.abs(permuted_states - states_permuted).max() > 1e-2


@pytest.mark.parametrize("name", registry.names())
def test_bfloat16_models_keep_float32_parameters(name):
  """config.model.dtype='bfloat16' is bfloat16 compute with float32 parameters, for every
  registered mixer: the classifier's variables are all float32 (flax's param_dtype default; no
  module creates bfloat16 parameters) and the logits are the head's float32 (its Dense layers
  have no dtype, so float32 parameters promote the bfloat16 pooled vector). Shapes and dtypes
  only (`jax.eval_shape`): nothing is computed."""
  small = SMALL_KWARGS.get(name, {})
  # The heads of Luna's/ISAB's small case are the model's (a context field the base passes).
  config = defaults.attention(transformer_listops.get_config("tiny"), name,
                              **{k: v for k, v in small.items() if k not in registry.CONTEXT_FIELDS})
  if "num_heads" in small:
    config.model.num_heads = small["num_heads"]
  config.model.dtype = "bfloat16"
  model = build_model(config.model, vocab_size=16, num_classes=10, max_len=L)
  batch = {"inputs": jnp.ones((2, L), jnp.int32), "mask": jnp.ones((2, L), bool)}
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), batch))
  leaves = jax.tree_util.tree_leaves_with_path(variables)
  assert any(path[0].key == "params" for path, _ in leaves)
  wrong = [(jax.tree_util.keystr(path), leaf.dtype) for path, leaf in leaves
           if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != jnp.float32]
  assert not wrong, wrong
  hidden_dtypes = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.module.name == "encoder" and context.method_name == "__call__":
      hidden_dtypes.append(out[0].dtype)
    return out

  with nn.intercept_methods(record):
    logits, _ = jax.eval_shape(lambda v: model.apply(v, batch), variables)
  assert hidden_dtypes == [jnp.bfloat16]  # the encoder computes in bfloat16
  assert logits.dtype == jnp.float32 and logits.shape == (2, 10)


def test_head_position_and_block_options_of_the_config_reach_every_block():
  """config.model.num_kv_heads / rope / score_bias / qk_norm / ffn='gated' / rezero / norm='none'
  are built into the model (no config field is ignored): one key/value head, the T5 table, the
  qk-norm scale, the gated feed-forward and ReZero's alpha in every block, no LayerNorm; and RoPE
  changes the output."""
  options = dict(num_kv_heads=1, score_bias="t5", qk_norm=True, ffn="gated", rezero=True,
                 norm="none", num_layers=2)
  params = init(tiny_model(**options))["params"]["encoder"]
  heads = transformer_listops.get_config("tiny").model.num_heads
  for i in range(2):
    block = params[f"block_{i}"]
    attention = block["attention"]
    assert attention["key"]["kernel"].shape[1] == 1 and attention["value"]["kernel"].shape[1] == 1
    assert attention["query"]["kernel"].shape[1] == heads
    assert "t5_relative_bias" in attention and "qk_norm_scale" in attention
    assert set(block["ffn"]) == {"gate", "in", "out"} and "rezero_alpha" in block
    assert not any("norm" in name for name in block)
  assert "final_norm" not in params
  inputs = tokens()
  plain, rotary = tiny_model(), tiny_model(rope=True)
  variables = init(plain)  # RoPE has no parameters: the same ones serve both models
  assert np.abs(encoder_states(plain, variables, inputs)
                - encoder_states(rotary, variables, inputs)).max() > 1e-3
  with pytest.raises(ValueError, match="rope"):
    init(tiny_model(attention="s4d", attention_kwargs=dict(SMALL_KWARGS["s4d"]), rope=True))
