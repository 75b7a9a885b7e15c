"""Linear Transformer (Katharopoulos et al. 2020) on Pathfinder-32: the task's LRA settings, this variant's defaults
(see models/attention/linear_transformer.py for the paper settings they follow)."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathfinder.get_config(), "linear_transformer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
