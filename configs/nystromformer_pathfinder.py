"""Nyströmformer (Xiong et al. 2021) on Pathfinder-32: the task's LRA settings,
this variant's defaults (see models/attention/nystromformer.py for the settings they follow)."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathfinder.get_config(), "nystromformer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
