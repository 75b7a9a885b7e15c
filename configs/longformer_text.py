"""Longformer (Beltagy et al. 2020) on Text (byte-level IMDb): the task's LRA settings and this
variant's defaults.

LRA's config for this model: lra_benchmarks/text_classification/configs/longformer_base.py. It
overrides nothing but model_type, so the model is the task's base.
"""
from configs import base_text, defaults


def get_config(preset=None):
  config = base_text.get_config()
  # LRA's LongformerEncoder has no global tokens (global_mask=None); ours makes position 0 (the
  # pooled token) global, as the paper does for classification.
  config = defaults.attention(config, "longformer")
  return defaults.finalize(config, preset, base_text.PRESETS)
