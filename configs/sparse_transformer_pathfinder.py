"""Sparse Transformer (Child et al. 2019) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/sparse_transformer_base.py): emb 32, 8 heads, 1
layer, qkv 16, mlp 32, dropout 0.2; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 8, 1, 16, 32
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  # LRA: l = 50, c = 10 for every task (utils/train_utils.py get_model) and causal masks even in
  # the encoder; ours bidirectional, l ~ sqrt(L) (block_size=0) and c = 8, as the paper.
  config = defaults.attention(config, "sparse_transformer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
