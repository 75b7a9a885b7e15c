"""Vanilla Transformer on Path-X (128 x 128, 16,384 tokens), with LRA's Transformer settings
for Pathfinder (32/4/4/16/32); dropout stays at Path-X's 0.1 (lra_tasks.md)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = base_pathx.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 4, 4, 16, 32
  return defaults.finalize(defaults.attention(config, "transformer"), preset, base_pathx.PRESETS)
