"""Vanilla Transformer (exact softmax attention) on Retrieval."""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = base_retrieval.get_config()
  return defaults.finalize(defaults.attention(config, "transformer"), preset, base_retrieval.PRESETS)
