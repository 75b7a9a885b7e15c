"""Linear Transformer (Katharopoulos et al. 2020) on Image (grayscale CIFAR-10), with LRA's
settings for this model (lra_benchmarks/image/configs/cifar10/linear_transformer_base.py): emb
128, 8 heads, 1 layer, qkv 64, mlp 128; the rest from the task's base."""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 8, 1, 64, 128
  config = defaults.attention(config, "linear_transformer")
  return defaults.finalize(config, preset, base_image.PRESETS)
