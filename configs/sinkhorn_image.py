"""Sparse Sinkhorn attention (Tay et al. 2020) on Image (grayscale CIFAR-10): the task's LRA settings, this variant's defaults
(see models/attention/sinkhorn.py for the paper settings they follow)."""
from configs import base_image, defaults


def get_config(preset=None):
  config = defaults.attention(base_image.get_config(), "sinkhorn")
  return defaults.finalize(config, preset, base_image.PRESETS)
