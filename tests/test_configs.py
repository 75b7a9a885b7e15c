"""Every config file builds, with and without presets; configs are locked; a variant's config
carries every setting of its mixer."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable, Sequence

import flax.linen as nn
import jax
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import defaults
from models.attention import registry

CONFIGS = sorted(p.stem for p in Path("configs").glob("*.py")  # helpers have no get_config
                 if "def get_config" in p.read_text())


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("preset", [None, "quick", "tiny"])
def test_config_builds_and_is_locked(name, preset):
  config = importlib.import_module(f"configs.{name}").get_config(preset)
  assert config.is_locked
  assert config.model.attention in registry.names()
  assert config.task and config.data.max_length > 0
  assert config.model.emb_dim > 0 and config.train.num_train_steps > 0
  with pytest.raises(AttributeError):
    config.model.emb_dm = 3  # a misspelt field is an error, not a new field


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_preset_is_an_error(name):
  with pytest.raises(ValueError, match="unknown config preset 'quik'"):
    importlib.import_module(f"configs.{name}").get_config("quik")


def test_listops_base_has_lra_values():
  from configs import base_listops
  config = base_listops.get_config()
  assert (config.model.emb_dim, config.model.num_heads, config.model.num_layers,
          config.model.qkv_dim, config.model.mlp_dim) == (512, 8, 4, 512, 1024)
  assert (config.train.batch_size, config.train.learning_rate, config.train.warmup_steps,
          config.train.num_train_steps, config.train.weight_decay) == (32, 0.05, 1000, 5000, 0.1)
  assert config.data.max_length == 2000
  gen = config.data.generator
  assert (gen.max_depth, gen.max_args, gen.min_length, gen.max_length) == (10, 10, 500, 2000)
  assert (gen.num_train, gen.num_val, gen.num_test) == (96_000, 2_000, 2_000)


# ---------------------------------------------------------------- every mixer setting, visible
VARIANT_CONFIGS = [name for name in CONFIGS if not name.startswith("base_")]


def mixer_defaults(attention):
  """The mixer's init fields and defaults, less flax's own and the context the base passes in."""
  fields = [f for f in dataclasses.fields(registry.get(attention).mixer)
            if f.init and f.name not in ("parent", "name", *registry.CONTEXT_FIELDS)]
  return {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
          for f in fields}


@pytest.mark.parametrize("name", VARIANT_CONFIGS)
def test_variant_config_carries_every_mixer_setting(name):
  """So config.json shows the whole model and `--config.model.attention_kwargs.<any>=` works."""
  model = importlib.import_module(f"configs.{name}").get_config().model
  expected = mixer_defaults(model.attention)
  assert set(model.attention_kwargs) == set(expected)
  source = Path(f"configs/{name}.py").read_text()
  if "zoo_papers." in source:  # the paper's settings live in configs/zoo_papers.py
    source += Path("configs/zoo_papers.py").read_text()
  for field, default in expected.items():
    value = model.attention_kwargs[field]
    # a setting the variant's file does not set is the mixer's default
    if f"{field}=" not in source:
      assert value == (tuple(default) if isinstance(default, list) else default), field


def test_attention_rejects_a_setting_the_mixer_does_not_have():
  with pytest.raises(ValueError, match=r"no setting 'num_featurs' \(did you mean 'num_features'"):
    defaults.attention(defaults.shared_config(), "performer", num_featurs=8)


def test_switching_attention_keeps_no_foreign_settings():
  """The Performer's settings under `attention=linformer` are an error, not silently dropped."""
  config = importlib.import_module("configs.performer_listops").get_config()
  defaults.check_attention(config.model)
  config.model.attention = "linformer"
  with pytest.raises(ValueError, match="'num_features'.*attention 'linformer' does not have"):
    defaults.check_attention(config.model)


class _ToyMixer(nn.Module):
  """Field kinds a mixer may have, for the command-line types of `defaults.mixer_settings`."""
  width: int | None = None
  offsets: Sequence[int] | None = None
  ratio: float = 1  # an int default of a float field
  names: Sequence[str] = ("a", "b")
  positions: Sequence[int] = dataclasses.field(default_factory=lambda: [0])
  init_fn: Callable = jax.nn.relu  # cannot live in a config: left out
  causal: bool = False  # context: the base sets it
  dropout_rate: float = 0.0


def test_mixer_settings_keep_their_types_for_command_line_overrides():
  settings = defaults.mixer_settings(_ToyMixer)
  assert settings.to_dict() == {"width": None, "offsets": None, "ratio": 1.0,
                                "names": ("a", "b"), "positions": (0,)}
  config = ml_collections.ConfigDict({"model": {"attention_kwargs": settings}})
  flag_values = flags.FlagValues()
  # A tuple is "1,2" or "(0, 7)"; a tuple of strings, one flag per item.
  argv = ["prog"] + [f"--c.model.attention_kwargs.{arg}" for arg in (
      "width=4", "ratio=2", "offsets=1,2", "names=x", "names=y", "positions=(0, 7)")]
  config_flags.DEFINE_config_dict("c", config, flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  got = flag_values.c.model.attention_kwargs
  assert (got.width, got.offsets, got.ratio, got.names, got.positions) == (
      4, (1, 2), 2.0, ("x", "y"), (0, 7))
  assert type(got.width) is int and type(got.ratio) is float  # pylint: disable=unidiomatic-typecheck
  with pytest.raises(TypeError):
    got.width = "wide"  # the None default is a typed placeholder, not an untyped None
