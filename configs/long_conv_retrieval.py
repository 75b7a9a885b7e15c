"""Long convolutions (Fu et al. 2023) on Retrieval (AAN): the authors' LRA recipe.

Source: HazyResearch/safari configs/experiment/lra/long-conv-lra-aan.yaml (commit 26f6223), on
configs/model/long-conv.yaml and configs/model/layer/long-conv.yaml (GELU after the convolution,
postact glu, kernel init random, no Smooth: use_ma_smoothing defaults to False), the cosine_warmup
scheduler and AdamW (configs/optimizer/adamw.yaml: betas (0.9, 0.999), torch's eps 1e-8). The kernel
is registered with its own learning rate (layer.learning_rate) and weight decay 0
(src/utils/train.py OptimModule.register). Kernel dropout (layer.kernel_dropout) is
config.model.attention_dropout_rate (the mixer's dropout_rate).

Stated differences: the layer config's `channels: 2` (two kernels per feature into a 2H-wide output
linear) is one channel here (the block's GLU stage reads H features). Their block dropout is tied
over the sequence (tie_dropout); ours is not. Their batches of 32 accumulate over 2 steps: one batch
of 64 here.
"""
from configs import base_retrieval, sequence_recipes


def get_config(preset=None):
  config = base_retrieval.get_config()
  config = sequence_recipes.recipe(
      config, "long_conv", preset, base_retrieval.PRESETS,
      kwargs=dict(lam=0.004,             # layer.lam
                  smooth_window=0,       # use_ma_smoothing: false (layer default)
                  kernel_init="random",  # weight_init: random (kernel default)
                  bidirectional=False),  # layer default: false
      model=dict(num_layers=6,           # model.n_layers
                 emb_dim=256, qkv_dim=256,  # model.d_model
                 num_heads=1,            # unused by a sequence mixer
                 norm="batch",           # model.norm
                 prenorm=True,           # model.prenorm
                 ffn="glu",              # layer: activation gelu, postact glu; no feed-forward
                 pooling="MEAN",         # pipeline aan: decoder mode pool (each tower)
                 positions="none",       # no position embedding in their models
                 dropout_rate=0.0,       # model.dropout
                 attention_dropout_rate=0.1),  # layer.kernel_dropout
      train=dict(learning_rate=0.01,     # optimizer.lr
                 weight_decay=0.05,      # optimizer.weight_decay
                 schedule="cosine",      # scheduler: cosine_warmup
                 warmup_steps=2_500,    # scheduler.num_warmup_steps
                 batch_size=64,          # loader.batch_size 32 x accumulate_grad_batches 2
                 # trainer.max_epochs 20 (45,964; scheduler: 50,000)
                 num_train_steps=20 * 147_086 // 64,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      param_groups=dict(  # layer.learning_rate; weight decay 0 (OptimModule.register)
          kernel=dict(match=(r"/mixer/kernel$",), learning_rate=0.0001, weight_decay=0.0)))
  return config
