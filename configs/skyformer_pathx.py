"""Skyformer (Chen et al. 2021) on Path-X: the task's LRA settings, this variant's defaults
(128 landmarks: see models/attention/skyformer.py). The paper has no Path-X run."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathx.get_config(), "skyformer")
  return defaults.finalize(config, preset, base_pathx.PRESETS)
