"""Luna (Ma et al. 2021) on ListOps: the task's LRA settings with Luna's packed length.

packed_length=256: the paper's Luna-256 row of its LRA table (Luna-16 and Luna-128 are the
same model with --config.model.attention_kwargs.packed_length=16 / 128). Heads: the task's.
The authors' LRA layers are post-norm (fairseq-apollo LunaLRAEncoder: normalize_before=False),
so the block is post-norm here too and computes eq. 5-7 exactly (models/attention/luna.py);
P's residual dropout is the task's dropout rate (their layer's args.dropout). The rest of the
model and training protocol is the task's LRA base (the authors' own fairseq recipes,
examples/luna/README.lra.md, differ per task and are not reproduced here).
"""
from configs import base_listops, defaults


def get_config(preset=None):
  config = base_listops.get_config()
  config = defaults.attention(config, "luna", packed_length=256,
                              num_heads=config.model.num_heads,
                              packed_dropout_rate=config.model.dropout_rate)
  config.model.prenorm = False  # LunaSentenceEncoderLayer with normalize_before=False
  return defaults.finalize(config, preset, base_listops.PRESETS)
