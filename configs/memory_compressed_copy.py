"""Memory-compressed attention (Liu et al. 2018, sec. 4.2.4) on Copy (lra/copy.py): the task's
settings (configs/base_copy.py) and this variant's defaults, as the mixer of the encoder and of the
causal decoder (cross attention: config.model.cross_attention)."""
from configs import base_copy, defaults


def get_config(preset=None):
  config = defaults.attention(base_copy.get_config(), "memory_compressed")
  return defaults.finalize(config, preset, base_copy.PRESETS)
