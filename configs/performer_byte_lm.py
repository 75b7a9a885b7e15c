"""Performer FAVOR+ (Choromanski et al. 2021) on the byte-level language model (lra/byte_lm.py):
the task's settings (configs/base_byte_lm.py) and this variant's defaults, as the causal decoder's
mixer."""
from configs import base_byte_lm, defaults


def get_config(preset=None):
  config = defaults.attention(base_byte_lm.get_config(), "performer")
  return defaults.finalize(config, preset, base_byte_lm.PRESETS)
