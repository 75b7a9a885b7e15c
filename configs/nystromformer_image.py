"""Nyströmformer (Xiong et al. 2021) on Image (grayscale CIFAR-10): the task's LRA settings,
this variant's defaults (see models/attention/nystromformer.py for the settings they follow)."""
from configs import base_image, defaults


def get_config(preset=None):
  config = defaults.attention(base_image.get_config(), "nystromformer")
  return defaults.finalize(config, preset, base_image.PRESETS)
