"""Sparse Sinkhorn attention (Tay et al. 2020) on Image (grayscale CIFAR-10), with LRA's settings
for this model (lra_benchmarks/image/configs/cifar10/sinkhorn_base.py): 1 layer (the base's
sizes otherwise), dropout 0.1, weight decay 0.7, block_size 64; the rest from the task's base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.num_layers = 1
  model.dropout_rate = 0.1  # the attention dropout stays the base's
  config.train.weight_decay = 0.7
  config = defaults.attention(config, "sinkhorn", block_size=64)
  return defaults.finalize(config, preset, base_image.PRESETS)
