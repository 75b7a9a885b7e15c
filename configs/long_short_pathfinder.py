"""Long-Short Transformer (Zhu et al. 2021) on Pathfinder: the task's LRA settings, this variant's
defaults (w, r) = (8, 32), the paper's "Transformer-LS (w, r = 8, 32)" LRA setting (see
models/attention/long_short.py). The paper reports no result on this task."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathfinder.get_config(), "long_short")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
