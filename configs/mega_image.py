"""Mega (Ma et al. 2023) on Image (CIFAR-10): the authors' LRA recipe.

Source: facebookresearch/mega examples/mega/README.lra.md (the Image command) and
fairseq/models/lra/model.py (architecture mega_lra_cifar10; base_architecture for what it leaves).
The encoder layer is MegaSentenceEncoderLayer: the MEGA layer (bidirectional EMA, hard-coded in
mega_sentence_encoder_layer.py) then a normalised feed-forward network (NFFN, hidden size
encoder_ffn_embed_dim = encoder_hidden_dim, SiLU): config.model.ffn="mlp", mlp_dim = hidden_dim.
The Mega layer's own gated residual is completed by the block's residual (models/attention/mega.py).

Stated differences: their schedule is linear_decay (linear warm-up from 1e-7, then linear decay
to 0); lra/optim.py has no linear decay, so "cosine" (linear warm-up, cosine to 0) with the same
peak, warm-up and length. Their classifier has one hidden layer (classifier_layers=1) on the mean
of the real tokens; ours is the task's head on the same mean. Their dropout on H inside the layer
is the block's residual dropout here; the NFFN's hidden dropout (--act-dropout 0) is the block's
FFN dropout (config.model.dropout_rate). Their pixels enter through a linear map of the normalised intensity (--input-type image, --pixel-normalization 0.48 0.24); ours through the task's 256-token embedding. Pre-norm: the gated residual differs as the mixer's docstring says (the gate mixes H with norm(X), not X).
The presets shrink the Mega sizes (preset_kwargs) with the model; `chunk_size` is the paper's
Mega-chunk setting (e.g. --config.model.attention_kwargs.chunk_size=128).
"""
from configs import base_image, sequence_recipes

SMALL = dict(z_dim=16, hidden_dim=64, ndim=4)   # presets: smaller Mega sizes
TINY = dict(z_dim=8, hidden_dim=16, ndim=2)


def _tiny(config):
  """The task's tiny preset, with dropout on (this recipe's dropout is 0; tiny runs exercise it)."""
  base_image.tiny(config)
  config.model.dropout_rate = 0.1


PRESETS = {**base_image.PRESETS, "tiny": _tiny}


def get_config(preset=None):
  return sequence_recipes.recipe(
      base_image.get_config(), "mega", preset, PRESETS,
      kwargs=dict(z_dim=96,              # arch z_dim
                  hidden_dim=320,        # arch encoder_hidden_dim
                  ndim=16,               # --n-dim 16
                  chunk_size=1024,  # arch chunk_size 1024 (= the 1024 pixels: full attention)
                  attention_activation="laplace",  # --attention-activation-fn 'laplace'
                  bidirectional=True,    # MegaSentenceEncoderLayer builds the EMA bidirectional
                  truncation=1024,       # arch truncation_length
                  hidden_dropout_rate=0.0),  # --dropout 0.0 (on the EMA output)
      model=dict(num_layers=8,           # --encoder-layers 8
                 emb_dim=160, qkv_dim=160,  # arch encoder_embed_dim
                 num_heads=1,            # single-head gated attention
                 mlp_dim=320,           # NFFN: encoder_ffn_embed_dim = encoder_hidden_dim
                 activation="silu",      # --activation-fn 'silu' (NFFN too)
                 norm="batch",          # --norm-type 'batchnorm'
                 prenorm=True,         # --encoder-normalize-before
                 ffn="mlp",              # the NFFN after the MEGA layer
                 pooling="MEAN",         # --sen-rep-type 'mp' (mean of real tokens)
                 positions="none",       # relative position bias only (no absolute positions)
                 dropout_rate=0.0,      # --dropout 0.0
                 attention_dropout_rate=0.0),  # --attention-dropout 0.0
      train=dict(learning_rate=0.01,    # --lr 0.01
                 weight_decay=0.02,     # --weight-decay 0.02
                 schedule="cosine",      # --lr-scheduler linear_decay (docstring)
                 warmup_steps=9000,    # --warmup-updates 9000
                 batch_size=50,        # --batch-size 50 --update-freq 1
                 num_train_steps=180000,  # --max-update 180000
                 b1=0.9, b2=0.98, eps=1e-8,  # --adam-betas '(0.9, 0.98)' --adam-eps 1e-8
                 grad_clip_norm=1.0),    # --clip-norm 1.0
      preset_kwargs={name: kwargs for name, kwargs in
                     {"quick": SMALL, "small": SMALL, "tiny": TINY}.items()
                     if name in base_image.PRESETS})
