"""Routing Transformer (Roy et al. 2021) on Path-X: the task's LRA settings and this variant's
defaults, with k ~ sqrt(L) clusters as the paper sets them (sec. 4): L = 16384,
128 clusters (window L / k). The paper reports no LRA results (see models/attention/routing.py)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathx.get_config(), "routing", num_clusters=128)
  return defaults.finalize(config, preset, base_pathx.PRESETS)
