"""Linear Transformer (Katharopoulos et al. 2020) on Retrieval (AAN): the task's LRA settings, this variant's defaults
(see models/attention/linear_transformer.py for the paper settings they follow)."""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = defaults.attention(base_retrieval.get_config(), "linear_transformer")
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
