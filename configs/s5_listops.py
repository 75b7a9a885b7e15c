"""S5 (Smith, Warrington & Linderman, ICLR 2023) on ListOps: the authors' LRA recipe.

Source: lindermanlab/S5 bin/run_experiments/run_lra_listops.sh (the command behind the paper's
LRA table), with run_train.py's defaults for the flags it does not set (prenorm=True,
conj_sym=True, discretization=zoh, dt_max=0.1, mode=pool, cosine_anneal=True, lr_min=0).
Learning rates: lr = lr_factor * ssm_lr_base (s5/train.py);
opt_config=BfastandCdecay: Lambda_re, Lambda_im, log_step use the SSM rate with Adam (no weight
decay); B, C, D and the rest AdamW at lr with weight decay
(s5/train_helpers.py create_train_state). Adam's b2/eps are optax's defaults (0.999, 1e-8); no
gradient clipping. The schedule is a linear warm-up for warmup_end=1 epoch(s), then a
cosine to lr_min=0 (s5/train_helpers.py), per step here.

Stated differences: The authors' tokens enter as one-hot vectors through nn.Dense (an embedding
plus a bias); ours through the task's token embedding. Their BatchNorm momentum is 0.95
(--bn_momentum default); ours is the block's fixed 0.9. Their dropout is broadcast over the
sequence (nn.Dropout broadcast_dims=[0]); ours (block dropout) is not.
The presets shrink the state (preset_kwargs) with the model.
"""
from configs import base_listops, sequence_recipes

SSM_LR = 0.001  # --ssm_lr_base=0.001
LR = 3 * SSM_LR  # --lr_factor=3: lr = 0.003
WD = 0.04  # --weight_decay=0.04


def get_config(preset=None):
  return sequence_recipes.recipe(
      base_listops.get_config(), "s5", preset, base_listops.PRESETS,
      kwargs=dict(state_size=16,        # --ssm_size_base=16 (P; conj_sym keeps P/2)
                  blocks=8,             # --blocks=8 (J)
                  c_init="lecun_normal",  # --C_init=lecun_normal
                  conj_sym=True,         # run_train.py --conj_sym default True
                  discretization="zoh",  # run_train.py --discretization default zoh
                  dt_min=0.001, dt_max=0.1,  # run_train.py defaults 0.001, 0.1
                  clip_eigs=False,       # run_train.py --clip_eigs default False
                  bidirectional=True),   # --bidirectional=True
      model=dict(num_layers=8,           # --n_layers=8
                 emb_dim=128, qkv_dim=128,  # --d_model=128 (H)
                 num_heads=1,            # unused by a sequence mixer
                 norm="batch",           # --batchnorm=True
                 prenorm=True,           # run_train.py --prenorm default True
                 ffn="half_glu2",     # --activation_fn=half_glu2
                 activation="gelu",      # SequenceLayer: GELU before the gate
                 pooling="MEAN",         # --mode default pool (mean over real tokens)
                 positions="none",       # no position embedding in S5
                 dropout_rate=0.0),      # --p_dropout=0.0
      train=dict(learning_rate=LR,
                 weight_decay=WD,
                 schedule="cosine",      # --cosine_anneal default True, linear warm-up first
                 warmup_steps=1920,        # --warmup_end=1 epoch = 1 * 96000 // 50
                 batch_size=50,          # --bsz=50
                 num_train_steps=40 * 96000 // 50,  # --epochs=40: 76800 steps
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      # --opt_config=BfastandCdecay
      param_groups=dict(
          ssm=dict(match=(r"/mixer/(Lambda_re|Lambda_im|log_step)$",), learning_rate=SSM_LR,
                   weight_decay=0.0)),
      preset_kwargs={"tiny": dict(state_size=4, blocks=1)})
