"""Vanilla Transformer (exact softmax attention) on Text."""
from configs import base_text, defaults


def get_config(preset=None):
  config = base_text.get_config()
  return defaults.finalize(defaults.attention(config, "transformer"), preset, base_text.PRESETS)
