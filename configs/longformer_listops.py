"""Longformer (Beltagy et al. 2020) on ListOps: the task's LRA settings and this variant's
defaults.

LRA's config for this model: lra_benchmarks/listops/configs/longformer_base.py. It overrides
nothing but model_type, so the model is the task's base.
"""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  # LRA's LongformerEncoder has no global tokens (global_mask=None); ours makes position 0 (the
  # pooled token) global, as the paper does for classification.
  config = defaults.attention(config, "longformer")
  return defaults.finalize(config, preset, base_listops.PRESETS)
