"""Performer FAVOR+ (Choromanski et al. 2021) on ListOps: the task's LRA settings and this
variant's defaults.

LRA's config for this model: lra_benchmarks/listops/configs/performer_base.py. It sets
model_kwargs attention_fn_cls='softmax' with nb_features=2, ortho_scaling=0.0 (FAVOR+ with 2
random features, chi row norms; listops/train.py passes model_kwargs on).
"""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  config = defaults.attention(config, "performer", kernel="softmax", num_features=2, scaling="chi")
  return defaults.finalize(config, preset, base_listops.PRESETS)
