"""Transformer-XL (Dai et al. 2019) on the byte-level language model (lra/byte_lm.py): the
Transformer's byte_lm config with segment-level recurrence (models/transformer_xl.py): each
window is processed in 4 segments, every layer attending over its segment and the cached
states of the previous one (memory = one segment, as the paper's training where mem_len equals
tgt_len), with XL's relative positions in place of absolute ones (positions "none")."""
from configs import base_byte_lm, defaults


def get_config(preset=None):
  config = defaults.attention(base_byte_lm.get_config(), "transformer")
  config = defaults.finalize(config, preset, base_byte_lm.PRESETS)
  config.model.positions = "none"  # XL's positions are relative, inside its attention
  config.model.xl_segment_length = config.data.max_length // 4
  config.model.xl_memory_length = config.data.max_length // 4
  return config
