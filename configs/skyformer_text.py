"""Skyformer (Chen et al. 2021) on Text (byte-level IMDb): the paper's LRA model on the task's LRA
data and training protocol.

The paper (sec. 5, "Implementation Details"; the authors' src/config.py, pkuzengqi/Skyformer)
runs every LRA task with one small model: 2 layers, embedding 64, feed-forward 128, 2 heads
(head dimension 32), mean pooling, learned positions, dropout 0.1, and d = 128 sampled landmarks
("we control the number of features to be 128"). Those are set here. Not carried over: their
optimiser (the PyTorch LRA re-implementation of Nyströmformer: Adam, lr 1e-4 for Text, ListOps,
Image and 2e-4 for Retrieval, Pathfinder, linear decay, no weight decay, batch 16 / 32 / 16 /
128 / 256 for Text / ListOps / Retrieval / Pathfinder / Image, 50k steps); the training below is
the task's LRA protocol (configs/base_text.py), which the presets also shrink consistently.
"""
from configs import base_text, defaults


def get_config(preset=None):
  config = defaults.attention(base_text.get_config(), "skyformer", num_landmarks=128)
  model = config.model
  model.num_layers, model.emb_dim, model.qkv_dim, model.mlp_dim, model.num_heads = 2, 64, 64, 128, 2
  model.pooling, model.positions = "MEAN", "learned"
  model.dropout_rate = 0.1
  return defaults.finalize(config, preset, base_text.PRESETS)
