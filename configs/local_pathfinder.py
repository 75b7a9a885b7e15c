"""Block-local attention (Image Transformer 1D, Parmar et al. 2018) on Pathfinder-32, with LRA's
settings for this model (lra_benchmarks/image/configs/pathfinder32/local_base.py): emb 64, 4
heads, 2 layers, qkv 32, mlp 64, dropout 0.1, block_size 64; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 4, 2, 32, 64
  model.dropout_rate = 0.1  # the attention dropout stays the base's
  config = defaults.attention(config, "local", block_size=64)
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
