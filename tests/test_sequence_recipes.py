"""configs/sequence_recipes.py: a paper's recipe on a task base, kept through the presets."""
import importlib

import pytest

from configs import base_listops, defaults, sequence_recipes
from models.attention import registry

# The state-space and long-convolution mixers train with their papers' recipes
# (configs/sequence_recipes.py). The sequence-kind mixers of the attention survey (FNet, ISAB,
# Luna: they mix x with their own projections, so the registry calls them "sequence") run on
# the task's LRA base and its presets, like the attention variants.
RECIPES = ("s4d", "s5", "lru", "mega", "h3", "hyena", "long_conv", "sgconv")
TASK_BASE = ("fnet", "isab", "luna")
TASKS = ("listops", "text", "retrieval", "image", "pathfinder", "pathx")


def test_every_sequence_mixer_is_a_recipe_or_on_the_task_base():
  assert sorted(RECIPES + TASK_BASE) == registry.names(kind="sequence")
  for name in TASK_BASE:
    config = importlib.import_module(f"configs.{name}_listops").get_config()
    assert config.train.to_dict() == base_listops.get_config().train.to_dict(), name


@pytest.mark.parametrize("name", RECIPES)
def test_every_task_has_a_recipe_and_quick_keeps_its_block_and_optimiser(name):
  for task in TASKS:
    module = importlib.import_module(f"configs.{name}_{task}")
    full, quick = module.get_config(), module.get_config("quick")
    base = importlib.import_module(f"configs.base_{task}").get_config("quick")
    assert full.model.attention == quick.model.attention == name, (name, task)
    for field in sequence_recipes.BLOCK_FIELDS:
      assert quick.model[field] == full.model[field], (name, task, field)
    for field in sequence_recipes.OPTIMISER_FIELDS:
      assert quick.train[field] == full.train[field], (name, task, field)
    assert quick.train.param_groups.to_dict() == full.train.param_groups.to_dict()
    # ... while the preset's sizes and length are the task's :quick ones.
    for field in ("emb_dim", "num_layers"):
      assert quick.model[field] == base.model[field], (name, task, field)
    assert quick.train.num_train_steps == base.train.num_train_steps
    assert quick.data.max_length == base.data.max_length


def test_a_recipe_sets_fields_groups_and_preset_settings():
  config = sequence_recipes.recipe(
      base_listops.get_config(), "s4d", "quick", base_listops.PRESETS,
      kwargs={"state_size": 32, "bidirectional": True},
      model={"norm": "batch", "prenorm": False, "ffn": "glu", "pooling": "MEAN"},
      train={"learning_rate": 0.01, "schedule": "cosine", "weight_decay": 0.05},
      param_groups={"ssm": {"match": (r"/log_dt$",), "learning_rate": 1e-3,
                            "weight_decay": 0.0}},
      preset_kwargs={"quick": {"state_size": 8}})
  assert config.model.attention_kwargs.state_size == 8          # the preset's setting
  assert config.model.attention_kwargs.bidirectional            # the recipe's
  assert (config.model.norm, config.model.prenorm, config.model.ffn) == ("batch", False, "glu")
  assert config.train.learning_rate == 0.01 and config.train.schedule == "cosine"
  assert config.train.param_groups.ssm.learning_rate == 1e-3
  assert config.model.emb_dim == 64 and config.data.max_length == 40   # base quick's sizes
  with pytest.raises(ValueError, match="preset_kwargs for unknown presets"):
    sequence_recipes.recipe(base_listops.get_config(), "s4d", None, base_listops.PRESETS,
                            preset_kwargs={"fast": {}})
  with pytest.raises(KeyError, match="prenorm"):   # locked config: a misspelt field is an error
    sequence_recipes.recipe(base_listops.get_config(), "s4d", None, base_listops.PRESETS,
                            model={"prenrom": False})
  assert defaults.shared_config().model.ffn == "mlp"   # LRA's block stays the default
