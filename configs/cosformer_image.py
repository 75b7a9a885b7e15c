"""cosFormer (Qin et al. 2022) on Image (grayscale CIFAR-10): the task's LRA settings, this variant's
defaults (ReLU features with cos re-weighting; no setting besides eps: see
models/attention/cosformer.py)."""
from configs import base_image, defaults


def get_config(preset=None):
  config = defaults.attention(base_image.get_config(), "cosformer")
  return defaults.finalize(config, preset, base_image.PRESETS)
