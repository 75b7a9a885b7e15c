"""Linear Transformer (Katharopoulos et al. 2020) on Path-X: the task's LRA settings and this
variant's defaults. The LRA repository has no linear_transformer config for Path-X
(image/configs/pathfinder128/ holds only transformer_base.py), so the model is the task's base
(see models/attention/linear_transformer.py for the variant's settings)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = base_pathx.get_config()
  config = defaults.attention(config, "linear_transformer")
  return defaults.finalize(config, preset, base_pathx.PRESETS)
