"""Longformer (Beltagy et al. 2020) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/longformer_base.py): emb 32, 2 heads, 2 layers, qkv
16, mlp 32, dropout 0.1; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 2, 2, 16, 32
  model.dropout_rate = 0.1  # the attention dropout stays the base's
  # LRA's LongformerEncoder has no global tokens (global_mask=None); MEAN pooling has no CLS
  # token to make global, so none here either.
  config = defaults.attention(config, "longformer", global_positions=())
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
