"""BigBird (Zaheer et al. 2020) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/bigbird_base.py): emb 64, 2 heads, 4 layers, qkv 32,
mlp 64, dropout 0.2, block_size 64; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 2, 4, 32, 64
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  config = defaults.attention(config, "bigbird", block_size=64)
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
