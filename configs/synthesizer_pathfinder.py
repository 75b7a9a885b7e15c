"""Synthesizer (Tay et al. 2021) on Pathfinder-32, with LRA's settings for this model
(lra_benchmarks/image/configs/pathfinder32/synthesizer_base.py): emb 64, 4 heads, 2 layers, qkv
32, mlp 64, dropout 0.2, synthesizer_mode random; the rest from the task's base."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  config = base_pathfinder.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 64, 4, 2, 32, 64
  model.dropout_rate = 0.2  # the attention dropout stays the base's
  # LRA's mode 'random' adds the random logits to Q K^T (ignore_dot_product=False); ours is the
  # paper's pure Random Synthesizer (LRA-like: mode='mixture', mixture=('random',),
  # with_dot_product=True).
  config = defaults.attention(config, "synthesizer", mode="random")
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
