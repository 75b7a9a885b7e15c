"""Axial attention (Ho et al. 2019) on ListOps: the task's LRA settings, the 1-D sequence
folded into a near-square grid (shape=(): cols = ceil(sqrt(L)) of the padded length; see
models/attention/axial.py). The paper reports no LRA results."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = defaults.attention(base_listops.get_config(), "axial")
  return defaults.finalize(config, preset, base_listops.PRESETS)
