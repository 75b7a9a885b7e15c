"""Block-local attention (Image Transformer 1D, Parmar et al. 2018) on Retrieval (AAN): the task's LRA settings, this variant's defaults
(see models/attention/local.py for the paper settings they follow)."""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = defaults.attention(base_retrieval.get_config(), "local")
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
