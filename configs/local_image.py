"""Block-local attention (Image Transformer 1D, Parmar et al. 2018) on Image (grayscale CIFAR-10),
with LRA's settings for this model (lra_benchmarks/image/configs/cifar10/local_base.py): emb
128, 2 heads, 1 layer, qkv 64, mlp 128, MEAN pooling, block_size 64; the rest from the task's
base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 2, 1, 64, 128
  model.pooling = "MEAN"  # classifier_pool
  config = defaults.attention(config, "local", block_size=64)
  return defaults.finalize(config, preset, base_image.PRESETS)
