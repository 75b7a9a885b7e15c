"""Routing Transformer (Roy et al. 2021) on ListOps: the task's LRA settings and this variant's
defaults, with k ~ sqrt(L) clusters as the paper sets them (sec. 4): L = 2000,
45 clusters (window L / k). The paper reports no LRA results (see models/attention/routing.py)."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = defaults.attention(base_listops.get_config(), "routing", num_clusters=45)
  return defaults.finalize(config, preset, base_listops.PRESETS)
