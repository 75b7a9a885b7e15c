"""SGConv (Li, Cai, Zhang, Chen, Dey 2022) on Text (IMDb bytes): the S4 repository's LRA recipe with
the SGConv layer.

Source: the SGConv code (ctlllll/SGConv, gconv_standalone.py) is a layer for the S4 repository's
training setup ("Based on the amazing codebase by HazyResearch", its README); its LRA configs are
not published there, and the paper's appendix table could not be checked here. So the training
recipe is state-spaces/s4 configs/experiment/lra/s4-lra-imdb.yaml (commit ab287c6) with the S4 layer swapped for
GConv (the layer block: GELU, dropout, output linear with GLU = config.model.ffn="glu"). The
kernel settings are GConv's: kernel_dim 32 and decay_min = decay_max = 2 (the README's example;
the sub-kernel decay 1/2 of the paper), linear interpolation, mode cat_randn; the sub-kernels'
learning rate is kernel_args lr (layer.lr of the S4 config), with the optimiser's weight decay
(GConv's _optim sets only 'lr'). AdamW betas (0.9, 0.999) and eps 1e-8: the S4 repo's
configs/optimizer/adamw.yaml (torch defaults); no gradient clipping (trainer default).

Stated differences: the SGConv paper's own per-task table (depth, width, rates) may differ from
the S4 config used here (not verified). The `kernel_norm` parameter is the code's
fixed buffer: stop_gradient in the module and no weight decay here (group kernel_norm).
"""
from configs import base_text, sequence_recipes

LR = 0.01  # optimizer.lr


def get_config(preset=None):
  return sequence_recipes.recipe(
      base_text.get_config(), "sgconv", preset, base_text.PRESETS,
      kwargs=dict(kernel_dim=32,         # GConv README example (code default 64)
                  decay_min=2.0, decay_max=2.0,  # GConv kernel_args defaults
                  interpolation="linear",  # mode cat_randn: linear interpolation
                  bidirectional=True),   # layer.bidirectional: true
      model=dict(num_layers=6,           # model.n_layers: 6
                 emb_dim=256, qkv_dim=256,  # model.d_model: 256
                 num_heads=1,            # unused by a sequence mixer
                 norm="batch",          # model.norm: batch
                 prenorm=True,         # model.prenorm: true
                 ffn="glu",              # GELU, then the output linear with postact glu
                 activation="gelu",      # GConv activation default 'gelu'
                 pooling="MEAN",         # decoder.mode: pool (the mean)
                 positions="none",       # no position embedding (S4 pipelines: token encoder only)
                 dropout_rate=0.0),      # model.dropout: 0.0
      train=dict(learning_rate=LR,
                 weight_decay=0.05,      # optimizer.weight_decay: 0.05
                 schedule="cosine",      # scheduler: cosine_warmup
                 warmup_steps=1000,    # configs/scheduler/cosine_warmup.yaml default num_warmup_steps
                 batch_size=16,        # loader.batch_size: 16
                 num_train_steps=50000,  # scheduler.num_training_steps: 50000 (trainer.max_epochs 32)
                 b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=0.0),
      param_groups=dict(
          kernel=dict(match=(r"/mixer/kernel_\d+$",), learning_rate=0.001,  # layer.lr A, B: 0.001
                      weight_decay=0.05),
          kernel_norm=dict(match=(r"/mixer/kernel_norm$",), learning_rate=0.0,
                           weight_decay=0.0)),
      preset_kwargs={name: dict(kernel_dim=4) for name in ("quick", "small", "tiny")
                     if name in base_text.PRESETS})
