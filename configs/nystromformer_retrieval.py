"""Nyströmformer (Xiong et al. 2021) on Retrieval (AAN): the task's LRA settings,
this variant's defaults (see models/attention/nystromformer.py for the settings they follow)."""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = defaults.attention(base_retrieval.get_config(), "nystromformer")
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
