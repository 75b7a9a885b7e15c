"""Synthesizer (Tay et al. 2021) on Path-X: the task's LRA settings and this variant's defaults.
The LRA repository has no synthesizer config for Path-X (image/configs/pathfinder128/ holds only
transformer_base.py), so the model is the task's base (see models/attention/synthesizer.py for
the variant's settings)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = base_pathx.get_config()
  config = defaults.attention(config, "synthesizer")
  return defaults.finalize(config, preset, base_pathx.PRESETS)
