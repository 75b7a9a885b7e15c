"""H-Transformer-1D (Zhu & Soricut 2021) on ListOps: the task's LRA settings, this variant's
defaults (Nr = block_size 16; see models/attention/h_transformer_1d.py). The paper reports LRA
(Table 1); the Nr and model sizes of those runs could not be checked here (the paper's text was
not at hand), so the default Nr = 16 and LRA's task model stand."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = defaults.attention(base_listops.get_config(), "h_transformer_1d")
  return defaults.finalize(config, preset, base_listops.PRESETS)
