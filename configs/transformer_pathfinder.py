"""Vanilla Transformer on Pathfinder-32, with LRA's Transformer settings for this task:
emb 32, 4 heads, 4 layers, qkv 16, mlp 32, dropout and attention dropout 0.2 (lra_tasks.md)."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 4, 4, 16, 32
  model.dropout_rate = model.attention_dropout_rate = 0.2
  return defaults.finalize(defaults.attention(config, "transformer"), preset,
                           base_pathfinder.PRESETS)
