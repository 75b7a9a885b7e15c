"""Reformer LSH attention (Kitaev et al. 2020) on Image (grayscale CIFAR-10), with LRA's settings
for this model (lra_benchmarks/image/configs/cifar10/reformer_base.py): emb 64, 8 heads, 4
layers, qkv 32, mlp 64; the rest from the task's base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 8, 4, 32, 64
  # LRA hashes with rotations from a fixed PRNGKey(0) (the same in every layer and step); ours
  # are redrawn each training step and fixed per layer at evaluation, as the paper / trax.
  config = defaults.attention(config, "reformer")
  return defaults.finalize(config, preset, base_image.PRESETS)
