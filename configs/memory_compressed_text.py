"""Memory-compressed attention (Liu et al. 2018, sec. 4.2.4) on Text (IMDb bytes): the task's LRA
settings, this variant's defaults (factor 3 as in the paper, no local blocks; see
models/attention/memory_compressed.py). The paper reports no LRA results."""
from configs import base_text, defaults


def get_config(preset=None):
  config = defaults.attention(base_text.get_config(), "memory_compressed")
  return defaults.finalize(config, preset, base_text.PRESETS)
