"""Memory-compressed attention (Liu et al. 2018, sec. 4.2.4) on Retrieval (AAN byte pairs): the
task's LRA settings, this variant's defaults (factor 3 as in the paper, no local blocks; see
models/attention/memory_compressed.py). The paper reports no LRA results."""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = defaults.attention(base_retrieval.get_config(), "memory_compressed")
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
