"""S4D (Gu et al. 2022) on Text (IMDb, bytes): the S4 repository's LRA recipe with its diagonal
layer.

Source: state-spaces/s4 configs/experiment/lra/s4-lra-imdb.yaml (commit e757cef), run with
`model/layer=s4d` (the repo's CHANGELOG: S4D "can be run with any existing experiment config with
the additional flag model/layer=s4d"). AdamW betas (0.9, 0.999) and eps 1e-8: the repo's
configs/optimizer/adamw.yaml (torch defaults).

Stated differences: its dropout is tied over the sequence (tie_dropout); ours (block dropout) is
not. Texts are read up to 4096 bytes (dataset.l_max), not LRA's 1000.
"""
from configs import base_text, sequence_recipes

LR = 0.01  # s4-lra-imdb.yaml optimizer.lr


def get_config(preset=None):
  config = base_text.get_config()
  config.data.max_length = 4096  # dataset.l_max: 4096 (LRA: 1000)
  return sequence_recipes.recipe(
      config, "s4d", preset, base_text.PRESETS,
      kwargs=dict(state_size=4,          # layer.d_state: 4
                  ssm_init="legs",       # layer.init: legs (with mode diag: S4D-LegS)
                  dt_min=0.001, dt_max=0.1,  # layer.dt_min, dt_max
                  n_ssm=1,               # layer.n_ssm: 1 (one A, B shared by all features)
                  bidirectional=True),   # layer.bidirectional: true
      model=dict(num_layers=6,           # model.n_layers: 6
                 emb_dim=256, qkv_dim=256,  # model.d_model: 256
                 num_heads=1,            # unused by a sequence mixer
                 norm="batch",           # model.norm: batch
                 prenorm=True,           # model.prenorm: true
                 ffn="glu",              # layer defaults (configs/model/layer/s4.yaml): GELU, then
                                         # final_act glu; no feed-forward sublayer
                 pooling="MEAN",         # decoder.mode: pool
                 positions="none",       # no position embedding in the repo's models
                 dropout_rate=0.0),      # model.dropout: 0.0
      train=dict(learning_rate=LR,
                 weight_decay=0.05,      # optimizer.weight_decay
                 schedule="cosine",      # scheduler: cosine_warmup
                 warmup_steps=5_000,     # scheduler.num_warmup_steps
                 batch_size=16,          # loader.batch_size
                 # trainer.max_epochs 32 = 50,000 steps (scheduler's too)
                 num_train_steps=32 * 25_000 // 16,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      # layer.lr: {dt: null, A: 0.001, B: 0.001}; the repo registers every SSM parameter with
      # weight decay 0 (layer.wd: 0.0); dt: null = the global rate, still without decay.
      param_groups=dict(
          ssm=dict(match=(r"/mixer/(log_A_re|A_im|B_re|B_im)$",), learning_rate=0.001,
                   weight_decay=0.0),
          dt=dict(match=(r"/mixer/log_dt$",), learning_rate=LR, weight_decay=0.0)),
      preset_kwargs={"tiny": dict(state_size=2)})
