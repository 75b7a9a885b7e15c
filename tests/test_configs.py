"""Every config file builds, with and without presets; configs are locked."""
import importlib
from pathlib import Path

import pytest

from models.attention import registry

CONFIGS = sorted(p.stem for p in Path("configs").glob("*.py")
                 if p.stem not in ("__init__", "defaults"))


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
