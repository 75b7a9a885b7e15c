"""Vanilla Transformer on Path-X (128 x 128, 16,384 tokens). LRA's
lra_benchmarks/image/configs/pathfinder128/transformer_base.py overrides nothing, so the model
is the Path-X base's: emb 32, 2 heads, 1 layer, qkv 16, mlp 32, dropout 0.1 / 0.1
(unlike Pathfinder-32's Transformer, 32/4/4/16/32, dropout 0.2)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = base_pathx.get_config()  # the base's model, as LRA
  return defaults.finalize(defaults.attention(config, "transformer"), preset, base_pathx.PRESETS)
