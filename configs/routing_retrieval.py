"""Routing Transformer (Roy et al. 2021) on Retrieval: the task's LRA settings and this variant's
defaults, with k ~ sqrt(L) clusters as the paper sets them (sec. 4): L = 4000,
64 clusters (window L / k). The paper reports no LRA results (see models/attention/routing.py)."""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = defaults.attention(base_retrieval.get_config(), "routing", num_clusters=64)
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
