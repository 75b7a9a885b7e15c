"""Reformer LSH attention (Kitaev et al. 2020) on Retrieval (AAN): the task's LRA settings and this
variant's defaults.

LRA's config for this model: lra_benchmarks/matching/configs/reformer_base.py. It overrides
nothing but model_type, so the model is the task's base.
"""
from configs import base_retrieval, defaults


def get_config(preset=None):
  config = base_retrieval.get_config()
  # LRA hashes with rotations from a fixed PRNGKey(0) (the same in every layer and step); ours
  # are redrawn each training step and fixed per layer at evaluation, as the paper / trax.
  config = defaults.attention(config, "reformer")
  return defaults.finalize(config, preset, base_retrieval.PRESETS)
