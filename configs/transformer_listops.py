"""Vanilla Transformer (exact softmax attention) on ListOps."""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  return defaults.finalize(defaults.attention(config, "transformer"), preset, base_listops.PRESETS)
