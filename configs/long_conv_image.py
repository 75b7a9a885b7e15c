"""Long convolutions (Fu et al. 2023) on Image (CIFAR-10, grey): the authors' LRA recipe.

Source: HazyResearch/safari configs/experiment/lra/long-conv-lra-cifar.yaml (commit 26f6223), on
configs/model/long-conv.yaml and configs/model/layer/long-conv.yaml (GELU after the convolution,
postact glu, kernel init random, no Smooth: use_ma_smoothing defaults to False), the cosine_warmup
scheduler and AdamW (configs/optimizer/adamw.yaml: betas (0.9, 0.999), torch's eps 1e-8). The kernel
is registered with its own learning rate (layer.learning_rate) and weight decay 0
(src/utils/train.py OptimModule.register). Kernel dropout (layer.kernel_dropout) is
config.model.attention_dropout_rate (the mixer's dropout_rate).

Stated differences: the layer config's `channels: 2` (two kernels per feature into a 2H-wide output
linear) is one channel here (the block's GLU stage reads H features). Their block dropout is tied
over the sequence (tie_dropout); ours is not. Pixels enter through a linear encoder of the grey
value there (pipeline cifar: encoder linear); ours through the task's token embedding.
"""
from configs import base_image, sequence_recipes


def get_config(preset=None):
  config = base_image.get_config()
  config = sequence_recipes.recipe(
      config, "long_conv", preset, base_image.PRESETS,
      kwargs=dict(lam=0.003,             # layer.lam
                  smooth_window=0,       # use_ma_smoothing: false (layer default)
                  kernel_init="random",  # weight_init: random (kernel default)
                  bidirectional=False),  # layer default: false
      model=dict(num_layers=6,           # model.n_layers
                 emb_dim=512, qkv_dim=512,  # model.d_model
                 num_heads=1,            # unused by a sequence mixer
                 norm="layer",           # model.norm
                 prenorm=False,           # model.prenorm
                 ffn="glu",              # layer: activation gelu, postact glu; no feed-forward
                 pooling="MEAN",         # pipeline cifar: decoder mode pool
                 positions="none",       # no position embedding in their models
                 dropout_rate=0.1,       # model.dropout
                 attention_dropout_rate=0.2),  # layer.kernel_dropout
      train=dict(learning_rate=0.01,     # optimizer.lr
                 weight_decay=0.05,      # optimizer.weight_decay
                 schedule="cosine",      # scheduler: cosine_warmup
                 # cosine_warmup default (configs/scheduler/cosine_warmup.yaml)
                 warmup_steps=1_000,
                 batch_size=50,          # loader.batch_size
                 # trainer.max_epochs 200 (180,000; scheduler: 200,000)
                 num_train_steps=200 * 45_000 // 50,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      param_groups=dict(  # layer.learning_rate; weight decay 0 (OptimModule.register)
          kernel=dict(match=(r"/mixer/kernel$",), learning_rate=0.001, weight_decay=0.0)))
  return config
