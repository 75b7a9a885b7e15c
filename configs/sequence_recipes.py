"""A state-space / long-convolution paper's LRA recipe on top of a task's base config.

`configs/<mixer>_<task>.py` calls `recipe(...)` with that paper's published values for the task
(each cited in a comment there). The recipe sets the mixer and its settings, the block
(`config.model.norm`, `prenorm`, `ffn`, pooling, positions), the sizes, the optimiser and its
parameter groups (`config.train.param_groups`, lra/optim.py), and the training length.

Presets (`:quick`, `:small`, `:tiny`) are the task's (configs/base_<task>.py): they shrink the
data, the sizes and the number of steps. The recipe's block and optimiser (the paper's learning
rates, schedule, weight decay and groups) are put back after the preset, so a `:quick` run is the
paper's recipe scaled down, not the Transformer's optimiser on a smaller SSM.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import ml_collections

from configs import defaults

# What a preset may change and the recipe puts back afterwards.
BLOCK_FIELDS = ("norm", "prenorm", "ffn", "pooling", "positions", "activation")
OPTIMISER_FIELDS = ("learning_rate", "schedule", "weight_decay", "b1", "b2", "eps",
                    "grad_clip_norm")


def recipe(config: ml_collections.ConfigDict, attention: str, preset: str | None,
           presets: Mapping[str, Callable], *, kwargs: Mapping[str, Any] | None = None,
           model: Mapping[str, Any] | None = None, train: Mapping[str, Any] | None = None,
           param_groups: Mapping[str, Mapping[str, Any]] | None = None,
           preset_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
           ) -> ml_collections.ConfigDict:
  """Applies the recipe to `config` (a task's base config), then `preset`, and locks it.

  kwargs: the mixer's settings (`config.model.attention_kwargs`).
  model / train: fields of `config.model` / `config.train` (existing fields only; configs are
    locked, so a misspelt field is an error).
  param_groups: name -> {"match": (regex, ...), "learning_rate": float, "weight_decay": float}.
  preset_kwargs: preset name -> mixer settings applied after that preset (e.g. a smaller state
    for `:quick`)."""
  config = defaults.attention(config, attention, **dict(kwargs or {}))
  for field, value in dict(model or {}).items():
    config.model[field] = value
  for field, value in dict(train or {}).items():
    config.train[field] = value
  with config.train.unlocked():
    for name, group in dict(param_groups or {}).items():
      config.train.param_groups[name] = ml_collections.ConfigDict(dict(group))
  kept_model = {f: config.model[f] for f in BLOCK_FIELDS}
  kept_train = {f: config.train[f] for f in OPTIMISER_FIELDS}
  preset_kwargs = dict(preset_kwargs or {})

  def keeping_the_recipe(base_preset, name):
    def apply(config):
      base_preset(config)
      for field, value in kept_model.items():
        config.model[field] = value
      for field, value in kept_train.items():
        config.train[field] = value
      for field, value in dict(preset_kwargs.get(name, {})).items():
        config.model.attention_kwargs[field] = value
    return apply

  unknown = sorted(set(preset_kwargs) - set(presets))
  if unknown:
    raise ValueError(f"preset_kwargs for unknown presets {unknown}; known: {sorted(presets)}")
  wrapped = {name: keeping_the_recipe(fn, name) for name, fn in presets.items()}
  return defaults.finalize(config, preset, wrapped)
