"""Performer FAVOR+ (Choromanski et al. 2021) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/performer_base.py): emb 32, 8 heads, 4 layers, qkv
16, mlp 32, dropout 0.2; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 32, 8, 4, 16, 32
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  # LRA's PerformerEncoder default is make_fast_generalized_attention (ReLU of the raw q/k, no
  # random projection); ours is the paper's FAVOR+ (kernel='relu' keeps a random projection).
  config = defaults.attention(config, "performer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
