"""Routing Transformer (Roy et al. 2021) on associative recall (lra/associative_recall.py): the
task's settings (configs/base_associative_recall.py) and this variant's defaults, as the causal
decoder's mixer."""
from configs import base_associative_recall, defaults


def get_config(preset=None):
  config = defaults.attention(base_associative_recall.get_config(), "routing")
  return defaults.finalize(config, preset, base_associative_recall.PRESETS)
