"""Attention Free Transformer (Zhai et al. 2021) on ListOps: the task's LRA settings and this
variant's defaults (AFT-local, window 32; see models/attention/aft.py). The paper reports no LRA
results. AFT forms no attention weights: attention dropout 0."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = defaults.attention(base_listops.get_config(), "aft")
  return defaults.finalize(config, preset, base_listops.PRESETS)
