"""Block-local attention (Image Transformer 1D, Parmar et al. 2018) on Path-X: the task's LRA settings, this variant's defaults
(see models/attention/local.py for the paper settings they follow)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathx.get_config(), "local")
  return defaults.finalize(config, preset, base_pathx.PRESETS)
