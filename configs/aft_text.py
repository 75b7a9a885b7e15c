"""Attention Free Transformer (Zhai et al. 2021) on Text: the task's LRA settings and this
variant's defaults (AFT-local, window 32; see models/attention/aft.py). The paper reports no LRA
results. AFT forms no attention weights: attention dropout 0."""
from configs import base_text, defaults


def get_config(preset=None):
  config = defaults.attention(base_text.get_config(), "aft")
  return defaults.finalize(config, preset, base_text.PRESETS)
