"""Hyena (Poli et al. 2023) on Image (CIFAR-10, grey): safari's long-convolution LRA recipe
around the Hyena operator.

The Hyena paper reports no Long Range Arena results (its sequential-CIFAR experiment flattens
colour pixels, not LRA's greyscale Image task; its settings were not verified here), and its code
(HazyResearch/safari) ships LRA recipes only for its long-convolution layer (Fu et al. 2023), the
nearest model in that codebase (an explicit long filter where Hyena has an implicit one): the block
and training settings are safari configs/experiment/lra/long-conv-lra-cifar.yaml (commit 26f6223)
with the cosine_warmup scheduler and AdamW (configs/optimizer/adamw.yaml: betas (0.9, 0.999), eps
1e-8). The operator keeps Hyena's own settings: configs/model/layer/hyena.yaml (order 2,
filter_order 64, short_filter_order 3, dropout 0) and hyena-filter.yaml (emb_dim 3, w 1,
num_inner_mlps 2, bias on, not normalized; implicit-filter learning rate 1e-3 and weight decay 0
(`lr`, `wd`); positional-embedding learning rate 1e-5 (`lr_pos_emb`), weight decay 0),
ExponentialModulation's defaults (fast 0.3, slow 1.5, target 1e-2, shift 0).

Stated differences: the long-conv recipe's kernel dropout and squash (lam) belong to that layer
(safari's Hyena filter has no dropout: "filter_dropout is not implemented"); Hyena has no
bidirectional form in its code, so the operator here is causal. Pixels enter through a linear
encoder there (pipeline cifar); here through the task's token embedding. Their block dropout is
tied over the sequence where set; ours is not.
"""
from configs import base_image, sequence_recipes


def get_config(preset=None):
  return sequence_recipes.recipe(
      base_image.get_config(), "hyena", preset, base_image.PRESETS,
      kwargs=dict(order=2,               # hyena.yaml order: 2
                  form="safari",         # the released operator (what their runs used)
                  filter_order=64,       # hyena.yaml filter_order: 64 (the filter FFN's width)
                  short_filter_order=3,  # hyena.yaml short_filter_order: 3
                  emb_dim=3,             # hyena-filter.yaml emb_dim: 3
                  sine_freq=1.0,         # hyena-filter.yaml w: 1
                  num_inner_mlps=2,      # hyena-filter.yaml num_inner_mlps: 2
                  filter_bias=True,      # hyena-filter.yaml bias: true
                  normalized=False),     # hyena-filter.yaml normalized: False
      model=dict(num_layers=6,           # model.n_layers: 6
                 emb_dim=512, qkv_dim=512,  # model.d_model: 512
                 num_heads=1,            # unused by a sequence mixer
                 norm="layer",            # model.norm: layer
                 prenorm=False,          # model.prenorm: false
                 ffn="glu",              # long-conv model: GELU, then postact glu; no feed-forward
                 pooling="MEAN",         # pipeline cifar: decoder mode pool
                 positions="none",       # no position embedding in their models
                 dropout_rate=0.1,       # model.dropout: 0.1
                 attention_dropout_rate=0.0),  # hyena.yaml dropout: 0.0 (operator dropout)
      train=dict(learning_rate=0.01,   # optimizer.lr
                 weight_decay=0.05,      # optimizer.weight_decay
                 schedule="cosine",      # scheduler: cosine_warmup
                 warmup_steps=1_000,     # not set: configs/scheduler/cosine_warmup.yaml's 1000
                 batch_size=50,          # loader.batch_size
                 # trainer.max_epochs 200 (180,000; scheduler: 200,000)
                 num_train_steps=200 * 45_000 // 50,
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      # hyena-filter.yaml: the implicit filter's FFN (and its shared sine frequency) at lr 1e-3,
      # wd 0 (`lr`, `wd`); the positional embedding z at lr_pos_emb 1e-5, wd 0.
      param_groups=dict(
          filter=dict(match=(r"/mixer/filter/(filter_dense_\d+|filter_out)/",
                             r"/mixer/filter/sin_freq$"),
                      learning_rate=1e-3, weight_decay=0.0),
          pos_emb=dict(match=(r"/mixer/filter/pos_emb_z$",), learning_rate=1e-5,
                       weight_decay=0.0)),
      preset_kwargs={"quick": dict(filter_order=16),
                     "tiny": dict(filter_order=8)})
