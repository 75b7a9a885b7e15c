"""ISAB (Set Transformer, Lee et al. 2019) on Path-X: the task's LRA settings, the mixer's
defaults (32 inducing points) and the task's number of heads. The paper reports no LRA
results. The block is post-norm so that with its feed-forward it completes the outer MAB of
eq. 8 exactly (models/attention/isab.py)."""
from configs import base_pathx, defaults


def get_config(preset=None):
  config = base_pathx.get_config()
  config = defaults.attention(config, "isab")
  config.model.prenorm = False  # MAB (eq. 8) is post-norm
  return defaults.finalize(config, preset, base_pathx.PRESETS)
