"""Routing Transformer (Roy et al. 2021) on Text: the task's LRA settings and this variant's
defaults, with k ~ sqrt(L) clusters as the paper sets them (sec. 4): L = 1000,
the default 32 clusters (window L / k). The paper reports no LRA results (see
models/attention/routing.py)."""
from configs import base_text, defaults


def get_config(preset=None):
  config = defaults.attention(base_text.get_config(), "routing")
  return defaults.finalize(config, preset, base_text.PRESETS)
