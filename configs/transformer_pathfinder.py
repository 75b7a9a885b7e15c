"""Vanilla Transformer on Pathfinder-32, with LRA's Transformer settings for this task
(lra_benchmarks/image/configs/pathfinder32/transformer_base.py, since commit ee6649e):
emb 32, 4 heads, 4 layers, qkv 16, mlp 32, dropout 0.2; the attention dropout stays at the
base's 0.1 (that file overrides only `dropout_rate`)."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 4, 4, 16, 32
  model.dropout_rate, model.attention_dropout_rate = 0.2, 0.1
  return defaults.finalize(defaults.attention(config, "transformer"), preset,
                           base_pathfinder.PRESETS)
