"""Axial attention (Ho et al. 2019) on Image (grayscale CIFAR-10): the task's LRA settings,
attention along the image's own rows and columns (shape = 32 x 32; see
models/attention/axial.py). The paper reports no LRA results.

Differs from the task's base: MEAN pooling instead of a CLS token, which would take position 0 and
shift every pixel off its grid cell (the mixer refuses 1025 positions on a 32 x 32 grid)."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  config.model.pooling = "MEAN"   # no CLS token: pixel (r, c) stays at grid cell (r, c)
  config = defaults.attention(config, "axial", shape=(32, 32))
  return defaults.finalize(config, preset, base_image.PRESETS)
