"""FNet (Lee-Thorp et al. 2022) on Image (grayscale CIFAR-10): the task's LRA settings with FNet's
parameter-free Fourier sublayer (models/attention/fnet.py). The paper's Long-Range Arena
experiments (its LRA results table) run the Fourier sublayer in the LRA codebase's setup for each
task; no FNet-specific model or training settings are stated in the sources checked, so the
task's base is used unchanged (FNet has no attention dropout: the rate is 0)."""
from configs import base_image, defaults


def get_config(preset=None):
  config = defaults.attention(base_image.get_config(), "fnet")
  return defaults.finalize(config, preset, base_image.PRESETS)
