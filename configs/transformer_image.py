"""Vanilla Transformer (exact softmax attention) on Image (CIFAR-10).

Sizes from LRA's lra_benchmarks/image/configs/cifar10/transformer_base.py: emb 128, 8 heads,
1 layer, qkv 64, mlp 128 (dropout 0.3 / attention dropout 0.2 and the rest from the base).
The repository's first release (Oct 2020) left this file at the base model (32/1/1/32/64,
one head; reported to reach ~36% rather than the paper's 42.44); commit ee6649e (Aug 2021,
"Add the missing config in the public config for transformer on image tasks") added these
sizes, which the repository has kept since. We use them.
"""
from configs import base_image, defaults


def get_config(preset=None):
  config = base_image.get_config()
  model = config.model
  model.emb_dim, model.num_heads, model.num_layers, model.qkv_dim, model.mlp_dim = 128, 8, 1, 64, 128
  return defaults.finalize(defaults.attention(config, "transformer"), preset, base_image.PRESETS)
