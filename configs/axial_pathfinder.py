"""Axial attention (Ho et al. 2019) on Pathfinder-32: the task's LRA settings (MEAN pooling, no
CLS token), attention along the image's own rows and columns (shape = resolution x resolution,
read after the preset, which may shrink the images; see models/attention/axial.py). The paper
reports no LRA results. Overriding --config.data.resolution on the command line needs
--config.model.attention_kwargs.shape to match."""
from configs import base_pathfinder, defaults


def get_config(preset=None):
  resolution = base_pathfinder.get_config(preset).data.resolution   # after the preset
  config = defaults.attention(base_pathfinder.get_config(), "axial", shape=(resolution, resolution))
  return defaults.finalize(config, preset, base_pathfinder.PRESETS)
