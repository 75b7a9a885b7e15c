"""Longformer (Beltagy et al. 2020) on Image (grayscale CIFAR-10), with LRA's settings for this
model (lra_benchmarks/image/configs/cifar10/longformer_base.py): emb 128, 4 heads, 4 layers, qkv
64, mlp 128, MEAN pooling; the rest from the task's base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 4, 4, 64, 128
  model.pooling = "MEAN"  # classifier_pool
  # LRA's LongformerEncoder has no global tokens (global_mask=None); MEAN pooling has no CLS
  # token to make global, so none here either.
  config = defaults.attention(config, "longformer", global_positions=())
  return defaults.finalize(config, preset, base_image.PRESETS)
