"""Reformer LSH attention (Kitaev et al. 2020) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/reformer_base.py): emb 64, 8 heads, 2 layers, qkv 32,
mlp 64, dropout 0.2; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 8, 2, 32, 64
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  # LRA hashes with rotations from a fixed PRNGKey(0) (the same in every layer and step); ours
  # are redrawn each training step and fixed per layer at evaluation, as the paper / trax.
  config = defaults.attention(config, "reformer")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
