"""Linformer (Wang et al. 2020) on Text (byte-level IMDb): the task's LRA settings and this
variant's defaults.

LRA's config for this model: lra_benchmarks/text_classification/configs/linformer_base.py. It
also sets config.low_rank_features = 32, at the config's top level, which
text_classification/train.py never passes to the model (it passes only config.model, absent
here), so LRA ran LinformerAttention's default 16; so do we (k=16).
"""
from configs import base_text, defaults


def get_config(preset=None):
  config = base_text.get_config()
  config = defaults.attention(config, "linformer")
  return defaults.finalize(config, preset, base_text.PRESETS)
