"""The LRA models of papers in the second zoo whose settings go beyond one mixer setting,
applied to a task's LRA base by `configs/<name>_<task>.py` (one function per paper, so the
citation and the values live in one place).
"""
from __future__ import annotations

import ml_collections

from configs import defaults


def luna(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Luna (Ma et al. 2021) with the task's LRA settings and Luna's packed length.

  packed_length=256: the paper's Luna-256 row of its LRA table (Luna-16 and Luna-128 are the
  same model with --config.model.attention_kwargs.packed_length=16 / 128). Heads: the task's.
  The authors' LRA layers are post-norm (fairseq-apollo LunaLRAEncoder: normalize_before=False),
  so the block is post-norm here too and computes eq. 5-7 exactly (models/attention/luna.py);
  P's residual dropout is the task's dropout rate (their layer's args.dropout). The rest of the
  model and training protocol is the task's LRA base (the authors' own fairseq recipes,
  examples/luna/README.lra.md, differ per task and are not reproduced here).
  """
  config = defaults.attention(config, "luna", packed_length=256,
                              packed_dropout_rate=config.model.dropout_rate)
  config.model.prenorm = False  # LunaSentenceEncoderLayer with normalize_before=False
  return config


def skyformer(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Skyformer (Chen et al. 2021): the paper's LRA model on the task's LRA data and training.

  The paper (sec. 5, "Implementation Details"; the authors' src/config.py, pkuzengqi/Skyformer)
  runs every LRA task with one small model: 2 layers, embedding 64, feed-forward 128, 2 heads
  (head dimension 32), mean pooling, learned positions, dropout 0.1, and d = 128 sampled
  landmarks ("we control the number of features to be 128"). Those are set here. Not carried
  over: their optimiser (the PyTorch LRA re-implementation of Nyströmformer: Adam, lr 1e-4 for
  Text, ListOps, Image and 2e-4 for Retrieval, Pathfinder, linear decay, no weight decay, batch
  16 / 32 / 16 / 128 / 256 for Text / ListOps / Retrieval / Pathfinder / Image, 50k steps); the
  training is the task's LRA protocol (configs/base_<task>.py), which the presets also shrink
  consistently.
  """
  config = defaults.attention(config, "skyformer", num_landmarks=128)
  model = config.model
  model.num_layers, model.emb_dim, model.qkv_dim, model.mlp_dim, model.num_heads = 2, 64, 64, 128, 2
  model.pooling, model.positions = "MEAN", "learned"
  model.dropout_rate = 0.1
  return config
