"""Synthesizer (Tay et al. 2021) on Text (byte-level IMDb): the task's LRA settings and this
variant's defaults.

LRA's config for this model: lra_benchmarks/text_classification/configs/synthesizer_base.py. It
also sets ignore_dot_product=True, synthesizer_mode='factorized_random', k=32 at the config's
top level, which text_classification/train.py never passes to the model (only config.model,
absent here), so LRA ran the SynthesizerEncoder defaults (mode 'random', dot product kept);
ours: mode='random' (see the note below).
"""
from configs import base_text, defaults


def get_config(preset=None):
  config = base_text.get_config()
  # LRA's mode 'random' adds the random logits to Q K^T (ignore_dot_product=False); ours is the
  # paper's pure Random Synthesizer (LRA-like: mode='mixture', mixture=('random',),
  # with_dot_product=True).
  config = defaults.attention(config, "synthesizer", mode="random")
  return defaults.finalize(config, preset, base_text.PRESETS)
