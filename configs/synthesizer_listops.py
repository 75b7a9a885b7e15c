"""Synthesizer (Tay et al. 2021) on ListOps: the task's LRA settings and this variant's defaults.

LRA's config for this model: lra_benchmarks/listops/configs/synthesizer_base.py. It overrides
nothing but model_type, so the model is the task's base.
"""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  # LRA's mode 'random' adds the random logits to Q K^T (ignore_dot_product=False); ours is the
  # paper's pure Random Synthesizer (LRA-like: mode='mixture', mixture=('random',),
  # with_dot_product=True).
  config = defaults.attention(config, "synthesizer")
  return defaults.finalize(config, preset, base_listops.PRESETS)
