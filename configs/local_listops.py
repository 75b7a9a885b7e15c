"""Block-local attention (Image Transformer 1D, Parmar et al. 2018) on ListOps: the task's LRA
settings and this variant's defaults.

LRA's config for this model: lra_benchmarks/listops/configs/local_base.py. It overrides nothing
but model_type, so the model is the task's base.
"""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  config = defaults.attention(config, "local")
  return defaults.finalize(config, preset, base_listops.PRESETS)
