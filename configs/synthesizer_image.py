"""Synthesizer (Tay et al. 2021) on Image (grayscale CIFAR-10), with LRA's settings for this model
(lra_benchmarks/image/configs/cifar10/synthesizer_base.py): emb 128, 8 heads, 1 layer, qkv 64,
mlp 128, synthesizer_mode random; the rest from the task's base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 8, 1, 64, 128
  # LRA's mode 'random' adds the random logits to Q K^T (ignore_dot_product=False); ours is the
  # paper's pure Random Synthesizer (LRA-like: mode='mixture', mixture=('random',),
  # with_dot_product=True).
  config = defaults.attention(config, "synthesizer", mode="random")
  return defaults.finalize(config, preset, base_image.PRESETS)
