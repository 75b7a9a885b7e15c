"""cosFormer (Qin et al. 2022) on ListOps: the task's LRA settings, this variant's
defaults (ReLU features with cos re-weighting; no setting besides eps: see
models/attention/cosformer.py)."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = defaults.attention(base_listops.get_config(), "cosformer")
  return defaults.finalize(config, preset, base_listops.PRESETS)
