"""Linformer (Wang et al. 2020) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/linformer_base.py): emb 32, 2 heads, 1 layer, qkv 16,
mlp 32, dropout 0.2; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 2, 1, 16, 32
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  config = defaults.attention(config, "linformer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
