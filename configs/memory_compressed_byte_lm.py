"""Memory-compressed attention (Liu et al. 2018, sec. 4.2.4) on the byte-level language model
(lra/byte_lm.py): the task's settings (configs/base_byte_lm.py) and this variant's defaults, as the
causal decoder's mixer."""
from configs import base_byte_lm, defaults


def get_config(preset=None):
  config = defaults.attention(base_byte_lm.get_config(), "memory_compressed")
  return defaults.finalize(config, preset, base_byte_lm.PRESETS)
