"""RFA (Peng et al. 2021, "Random Feature Attention") on Path-X: the task's LRA settings,
this variant's defaults (RFA-Gaussian, D = 64 random features, learned sigma, no gate: see
models/attention/rfa.py). The paper's long-text-classification runs (ListOps, Text, Retrieval)
follow LRA's protocol; their RFA settings were not checked against the paper here."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = defaults.attention(base_pathx.get_config(), "rfa")
  return defaults.finalize(config, preset, base_pathx.PRESETS)
