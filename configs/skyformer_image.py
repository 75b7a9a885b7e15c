"""Skyformer (Chen et al. 2021) on Image (CIFAR-10): the paper's LRA settings on the task's LRA base
(configs/zoo_papers.py says which and cites them)."""
from configs import base_image, defaults, zoo_papers


def get_config(preset=None):
  config = zoo_papers.skyformer(base_image.get_config())
  return defaults.finalize(config, preset, base_image.PRESETS)
