"""Performer FAVOR+ (Choromanski et al. 2021) on Text (byte-level IMDb): the task's LRA settings
and this variant's defaults.

LRA's config for this model: lra_benchmarks/text_classification/configs/performer_base.py. It
overrides nothing but model_type, so the model is the task's base.
"""
from configs import base_text, defaults


def get_config(preset=None):
  config = base_text.get_config()
  # LRA's PerformerEncoder default is make_fast_generalized_attention (ReLU of the raw q/k, no
  # random projection); ours is the paper's FAVOR+ (kernel='relu' keeps a random projection).
  config = defaults.attention(config, "performer")
  return defaults.finalize(config, preset, base_text.PRESETS)
