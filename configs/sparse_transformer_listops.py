"""Sparse Transformer (Child et al. 2019) on ListOps: the task's LRA settings and this variant's
defaults.

LRA's config for this model: lra_benchmarks/listops/configs/sparse_transformer_base.py. It
overrides nothing but model_type, so the model is the task's base.
"""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  # LRA: l = 50, c = 10 for every task (utils/train_utils.py get_model) and causal masks even in
  # the encoder; ours bidirectional, l ~ sqrt(L) (block_size=0) and c = 8, as the paper.
  config = defaults.attention(config, "sparse_transformer")
  return defaults.finalize(config, preset, base_listops.PRESETS)
