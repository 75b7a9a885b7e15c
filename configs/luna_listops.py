"""Luna (Ma et al. 2021) on ListOps: the paper's LRA settings on the task's LRA base
(configs/zoo_papers.py says which and cites them)."""
from configs import base_listops, defaults, zoo_papers


def get_config(preset=None):
  config = zoo_papers.luna(base_listops.get_config())
  return defaults.finalize(config, preset, base_listops.PRESETS)
