"""Skyformer (Chen et al. 2021) on Text (byte-level IMDb): the paper's LRA settings on the task's LRA base
(configs/zoo_papers.py says which and cites them)."""
from configs import base_text, defaults, zoo_papers


def get_config(preset=None):
  config = zoo_papers.skyformer(base_text.get_config())
  return defaults.finalize(config, preset, base_text.PRESETS)
