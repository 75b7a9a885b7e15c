"""Performer FAVOR+ (Choromanski et al. 2021) on Image (grayscale CIFAR-10), with LRA's settings
for this model (lra_benchmarks/image/configs/cifar10/performer_base.py): emb 128, 8 heads, 1
layer, qkv 64, mlp 128; the rest from the task's base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 8, 1, 64, 128
  # LRA's PerformerEncoder default is make_fast_generalized_attention (ReLU of the raw q/k, no
  # random projection); ours is the paper's FAVOR+ (kernel='relu' keeps a random projection).
  config = defaults.attention(config, "performer")
  return defaults.finalize(config, preset, base_image.PRESETS)
