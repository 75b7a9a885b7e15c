"""Linear Transformer (Katharopoulos et al. 2020) on Pathfinder-32, with LRA's settings for this
model (lra_benchmarks/image/configs/pathfinder32/linear_transformer_base.py): emb 128, 2 heads,
1 layer, qkv 64, mlp 128, dropout 0.2; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 2, 1, 64, 128
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  config = defaults.attention(config, "linear_transformer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
