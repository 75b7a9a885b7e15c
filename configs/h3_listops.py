"""H3 (Fu et al. 2023) on ListOps: S4's LRA recipe around the H3 layer.

The H3 paper reports no Long Range Arena results (it evaluates language modelling, SuperGLUE
and synthetic recall tasks), and HazyResearch/H3 ships no LRA configs. H3's diagonal SSM is
S4D, so the block and training settings are S4's LRA recipe for this task:
state-spaces/s4 configs/experiment/lra/s4-listops.yaml (commit e757cef) on
configs/optimizer/adamw.yaml (betas (0.9, 0.999), eps 1e-8). The layer keeps H3's own settings:
d_state 64, head_dim 1, measure diag-lin (HazyResearch/safari configs/model/layer/h3.yaml; H3's
src/models/ssm/h3.py defaults), and their SSM parameters' learning rate
lr = min(0.001, optimizer.lr) with weight decay 0 (h3.yaml `lr`; OptimModule.register): log_dt,
A (inv_A_real, A_imag), B of the diagonal SSM and B of the shift SSM.

Stated differences: S4's recipe is bidirectional; H3 has no bidirectional form in its code, so the
layer here is causal (left to right) under mean pooling. S4's state size for this task (4) is not
used: H3's N = 64 also sets its shift SSM's taps. The block (norm, prenorm, GELU -> GLU output
stage, no feed-forward) is S4's, not H3's language-model block (pre-LayerNorm with an MLP, H3
src/models/ssm_seq.py). Their dropout is tied over the sequence where set; ours is not.
"""
from configs import base_listops, sequence_recipes

LR = 0.01  # s4-listops.yaml optimizer.lr


def get_config(preset=None):
  return sequence_recipes.recipe(
      base_listops.get_config(), "h3", preset, base_listops.PRESETS,
      kwargs=dict(d_state=64,            # H3 default (h3.yaml d_state: 64; docstring)
                  head_dim=1,            # h3.yaml head_dim: 1
                  measure="diag-lin",    # h3.yaml measure: diag-lin (S4D-Lin)
                  disc="zoh",            # S4D's ZOH (H3's extracted kernel defaults to bilinear)
                  dt_min=0.001, dt_max=0.1),  # layer.dt_min, dt_max
      model=dict(num_layers=6,           # model.n_layers: 6
                 emb_dim=256, qkv_dim=256,  # model.d_model: 256
                 num_heads=1,            # unused by a sequence mixer
                 norm="batch",           # model.norm: batch
                 prenorm=False,          # model.prenorm: false
                 ffn="glu",              # S4 layer: GELU, then postact glu; no feed-forward
                 pooling="MEAN",         # decoder.mode: pool
                 positions="none",       # no position embedding in the repo's models
                 dropout_rate=0.0),      # model.dropout: 0.0
      train=dict(learning_rate=LR,
                 weight_decay=0.05,      # optimizer.weight_decay
                 schedule="cosine",      # scheduler: cosine_warmup
                 warmup_steps=12_000,    # scheduler.num_warmup_steps
                 batch_size=32,          # loader.batch_size
                 # trainer.max_epochs 40 = 120,000 steps (scheduler's too)
                 num_train_steps=40 * 96_000 // 32,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      # safari h3.yaml lr: min(0.001, optimizer.lr) for the parameters H3 registers with `lr`
      # (the diagonal SSM's log_dt, A, B and the shift SSM's B), weight decay 0.
      param_groups=dict(
          ssm=dict(match=(r"/mixer/(log_dt|inv_A_real|A_imag|B|shift_B)$",),
                   learning_rate=min(0.001, LR), weight_decay=0.0)),
      preset_kwargs={"quick": dict(d_state=16), "small": dict(d_state=16),
                     "tiny": dict(d_state=4)})
