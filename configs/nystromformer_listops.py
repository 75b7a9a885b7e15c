"""Nyströmformer (Xiong et al. 2021) on ListOps: the task's LRA settings,
this variant's defaults (see models/attention/nystromformer.py for the settings they follow)."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = defaults.attention(base_listops.get_config(), "nystromformer")
  return defaults.finalize(config, preset, base_listops.PRESETS)
