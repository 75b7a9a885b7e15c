"""Sparse Sinkhorn attention (Tay et al. 2020) on Retrieval (AAN): the task's LRA settings and this
variant's defaults.

LRA's config for this model: lra_benchmarks/matching/configs/sinkhorn_transformer_base.py. It
overrides nothing but model_type, so the model is the task's base.
"""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = base_retrieval.get_config()
  config = defaults.attention(config, "sinkhorn")
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
