"""Hyena (Poli et al. 2023) on Copy (lra/copy.py): the task's settings (configs/base_copy.py) and
this variant's defaults, as the mixer of the encoder and of the causal decoder (cross attention:
config.model.cross_attention)."""
from configs import base_copy, defaults


def get_config(preset=None):
  config = defaults.attention(base_copy.get_config(), "hyena")
  return defaults.finalize(config, preset, base_copy.PRESETS)
