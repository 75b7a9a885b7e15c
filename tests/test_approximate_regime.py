"""The ListOps `small` preset keeps every variant in its approximate regime (README: survey
table on a CPU): what a query sees covers at most a quarter of the sequence."""
from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import approximate_regime, base_listops, defaults
from models.attention import registry

# Variants whose queries see a subset of keys: counted from the gradient, key by key.
PATTERN = ("local", "longformer", "bigbird", "sparse_transformer", "reformer", "routing")
# Variants that approximate through a size (landmarks, rank, features, sorted blocks, windows
# beside a global summary, packed or inducing sequences).
SIZED = {"nystromformer": "num_landmarks", "linformer": "k", "performer": "num_features",
         "sinkhorn": "block_size", "skyformer": "num_landmarks", "rfa": "num_features",
         "long_short": "window", "h_transformer_1d": "block_size", "luna": "packed_length",
         "isab": "num_inducing"}


def small_config(name):
  return importlib.import_module(f"configs.{name}_listops").get_config("small")


def test_every_registered_variant_is_classified():
  classified = (set(PATTERN) | set(SIZED) | set(approximate_regime.UNSCALED)
                | set(registry.names(kind="sequence")) | {"memory_compressed"})
  assert set(registry.names()) <= classified, sorted(set(registry.names()) - classified)


def test_sequence_mixers_are_unscaled_but_mega_chunk_is():
  for name in sorted(set(registry.names(kind="sequence")) - set(SIZED)):
    full = importlib.import_module(f"configs.{name}_listops").get_config()
    config = defaults.attention(base_listops.get_config(), name, **full.model.attention_kwargs)
    changes = approximate_regime.scale_to(config, 128)
    assert changes == ({"chunk_size": 32} if name == "mega" and
                       full.model.attention_kwargs.chunk_size > 0 else {}), name
  config = defaults.attention(base_listops.get_config(), "mega", chunk_size=128)
  assert approximate_regime.scale_to(config, 128) == {"chunk_size": 32}
  assert config.model.attention_kwargs.chunk_size == 32


def keys_seen_per_query(name, kwargs, length):
  """For each query i: how many positions j have a nonzero d output_i / d v_j, in the head that
  sees the most (heads hash, sort or sample differently)."""
  mixer = registry.build_mixer(name, kwargs, max_len=length, kv_max_len=length,
                               dropout_rate=0.0)
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (1, length, 2, 8)) for key in keys[:3])
  x = jax.random.normal(keys[3], (1, length, 16))
  mask = jnp.ones((1, length), bool)
  params = mixer.init({"params": jax.random.key(1)}, q, k, v, q_mask=mask, kv_mask=mask,
                      deterministic=True, inputs_q=x)

  def outputs(v):
    out = mixer.apply(params, q, k, v, q_mask=mask, kv_mask=mask, deterministic=True,
                      inputs_q=x)
    return out[0].sum(axis=-1)  # [query, heads]: head h's output reads only head h's v

  jacobian = np.asarray(jax.jit(jax.jacrev(outputs))(v))  # [query, heads, 1, key, heads, depth]
  own_head = np.stack([jacobian[:, h, 0, :, h] for h in range(jacobian.shape[1])], axis=1)
  return (np.abs(own_head) > 0).any(axis=-1).sum(axis=-1).max(axis=1)


@pytest.mark.parametrize("name", PATTERN)
def test_pattern_variants_see_at_most_a_quarter_of_the_sequence(name):
  config = small_config(name)
  length = config.data.max_length + 1  # the CLS token
  seen = keys_seen_per_query(name, dict(config.model.attention_kwargs), length)
  quarter = config.data.max_length // 4
  # Global queries (CLS, BigBird's global blocks) see everything; the typical query does not.
  assert np.median(seen) <= quarter + 1, (name, np.median(seen))  # + the global CLS key
  assert np.median(seen) >= 4, (name, np.median(seen))  # and it is still attention


@pytest.mark.parametrize("name", sorted(SIZED))
def test_sized_variants_use_at_most_a_quarter(name):
  config = small_config(name)
  assert config.model.attention_kwargs[SIZED[name]] <= config.data.max_length // 4


def test_scaling_is_what_the_preset_documents():
  config = small_config("sparse_transformer")
  kwargs = config.model.attention_kwargs
  length = config.data.max_length
  # l + (L / l) * c keys per query (the fixed pattern's block plus the summaries)
  assert kwargs.block_size + length // kwargs.block_size * kwargs.summary_size <= length // 4
  assert small_config("nystromformer").model.attention_kwargs.conv_kernel_size % 2 == 1
  with pytest.raises(ValueError, match="no rule for attention 'newformer'"):
    fake = small_config("transformer")
    fake.unlock()
    fake.model.attention = "newformer"
    approximate_regime.scale_to(fake, 128)


def test_memory_compressed_keeps_at_most_a_quarter_of_the_keys():
  config = small_config("memory_compressed")
  kwargs = config.model.attention_kwargs
  assert -(-(config.data.max_length + 1) // kwargs.factor) <= (config.data.max_length + 1) // 4 + 1
