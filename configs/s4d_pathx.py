"""S4D (Gu et al. 2022) on Path-X (128x128): the S4 repository's LRA recipe with its diagonal layer.

Source: state-spaces/s4 configs/experiment/lra/s4-lra-pathx.yaml (commit e757cef), run with
`model/layer=s4d` (the repo's CHANGELOG: S4D "can be run with any existing experiment config with
the additional flag model/layer=s4d"). AdamW betas (0.9, 0.999) and eps 1e-8: the repo's
configs/optimizer/adamw.yaml (torch defaults).

Stated differences: its dropout is tied over the sequence (tie_dropout); ours (block dropout) is
not. Pixels enter through a linear encoder in the repo (pipeline pathx: encoder linear); ours
through the task's token embedding. :quick (32x32 images) uses the Pathfinder dt_min 0.001.
"""
from configs import base_pathx, sequence_recipes

LR = 0.001  # s4-lra-pathx.yaml optimizer.lr


def get_config(preset=None):
  config = base_pathx.get_config()
  return sequence_recipes.recipe(
      config, "s4d", preset, base_pathx.PRESETS,
      kwargs=dict(state_size=64,         # layer.d_state: 64
                  ssm_init="legs",       # layer.init: legs (with mode diag: S4D-LegS)
                  dt_min=0.0001, dt_max=0.1,  # layer.dt_min: 0.0001, dt_max: 0.1
                  n_ssm=None,            # layer.n_ssm: null (one A, B per feature)
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
                 warmup_steps=50_000,    # scheduler.num_warmup_steps
                 batch_size=16,          # loader.batch_size
                 # trainer.max_epochs 50 = 500,000 steps (scheduler's too)
                 num_train_steps=50 * 160_000 // 16,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      # layer.lr: 0.001 (dt, A and B); the repo registers every SSM parameter with weight
      # decay 0 (layer.wd: 0.0).
      param_groups=dict(
          ssm=dict(match=(r"/mixer/(log_A_re|A_im|B_re|B_im|log_dt)$",), learning_rate=0.001,
                   weight_decay=0.0)),
      preset_kwargs={"quick": dict(state_size=16, dt_min=0.001), "tiny": dict(state_size=4)})
