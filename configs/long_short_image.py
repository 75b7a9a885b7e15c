"""Long-Short Transformer (Zhu et al. 2021) on Image (grayscale CIFAR-10): the task's LRA settings,
this variant's defaults (w, r) = (8, 32), the paper's "Transformer-LS (w, r = 8, 32)" LRA
setting (see models/attention/long_short.py). The paper reports no result on this task."""
from configs import base_image, defaults


def get_config(preset=None):
  config = defaults.attention(base_image.get_config(), "long_short")
  return defaults.finalize(config, preset, base_image.PRESETS)
