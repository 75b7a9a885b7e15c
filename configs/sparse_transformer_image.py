"""Sparse Transformer (Child et al. 2019) on Image (grayscale CIFAR-10): the task's LRA settings, this variant's defaults
(see models/attention/sparse_transformer.py for the paper settings they follow)."""
from configs import base_image, defaults


def get_config(preset=None):
  config = defaults.attention(base_image.get_config(), "sparse_transformer")
  return defaults.finalize(config, preset, base_image.PRESETS)
