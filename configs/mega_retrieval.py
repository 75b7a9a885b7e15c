"""Mega (Ma et al. 2023) on Retrieval (AAN): the authors' LRA recipe.

Source: facebookresearch/mega examples/mega/README.lra.md (the Retrieval command) and
fairseq/models/lra/model.py (architecture mega_lra_aan; base_architecture for what it leaves).
The encoder layer is MegaSentenceEncoderLayer: the MEGA layer (bidirectional EMA, hard-coded in
mega_sentence_encoder_layer.py) then a normalised feed-forward network (NFFN, hidden size
encoder_ffn_embed_dim = encoder_hidden_dim, SiLU): config.model.ffn="mlp", mlp_dim = hidden_dim.
The Mega layer's own gated residual is completed by the block's residual (models/attention/mega.py).

Stated differences: their schedule is linear_decay (linear warm-up from 1e-7, then linear decay
to 0); lra/optim.py has no linear decay, so "cosine" (linear warm-up, cosine to 0) with the same
peak, warm-up and length. Their classifier has one hidden layer (classifier_layers=1) on the mean
of the real tokens; ours is the task's head on the same mean. Their dropout on H inside the layer
is the block's residual dropout here; the NFFN's hidden dropout (--act-dropout 0) is the block's
FFN dropout (config.model.dropout_rate). The authors use ScaleNorm (--norm-type scalenorm); the block has LayerNorm or BatchNorm, so LayerNorm. Their classifier reads [u, v, u*v, u-v] of the two mean-pooled encodings (classifier_in_dim = 2 * embed dim); ours is the task's dual-encoder head.
The presets shrink the Mega sizes (preset_kwargs) with the model; `chunk_size` is the paper's
Mega-chunk setting (e.g. --config.model.attention_kwargs.chunk_size=128).
"""
from configs import base_retrieval, sequence_recipes

SMALL = dict(z_dim=16, hidden_dim=64, ndim=4)   # presets: smaller Mega sizes
TINY = dict(z_dim=8, hidden_dim=16, ndim=2)


def get_config(preset=None):
  return sequence_recipes.recipe(
      base_retrieval.get_config(), "mega", preset, base_retrieval.PRESETS,
      kwargs=dict(z_dim=64,              # arch z_dim
                  hidden_dim=256,        # arch encoder_hidden_dim
                  ndim=16,               # --n-dim 16
                  chunk_size=0,  # arch chunk_size -1 (full attention)
                  attention_activation="softmax",  # --attention-activation-fn 'softmax'
                  bidirectional=True,    # MegaSentenceEncoderLayer builds the EMA bidirectional
                  truncation=1024,       # arch truncation_length
                  hidden_dropout_rate=0.1),  # --dropout 0.1 (on the EMA output)
      model=dict(num_layers=6,           # --encoder-layers 6
                 emb_dim=128, qkv_dim=128,  # arch encoder_embed_dim
                 num_heads=1,            # single-head gated attention
                 mlp_dim=256,           # NFFN: encoder_ffn_embed_dim = encoder_hidden_dim
                 activation="silu",      # --activation-fn 'silu' (NFFN too)
                 norm="layer",          # --norm-type 'scalenorm' (no ScaleNorm here: LayerNorm)
                 prenorm=False,         # no --encoder-normalize-before (base_architecture: False)
                 ffn="mlp",              # the NFFN after the MEGA layer
                 pooling="MEAN",         # --sen-rep-type 'mp' (mean of real tokens)
                 positions="none",       # relative position bias only (no absolute positions)
                 dropout_rate=0.1,      # --dropout 0.1
                 attention_dropout_rate=0.0),  # --attention-dropout 0.0
      train=dict(learning_rate=0.003,    # --lr 0.003
                 weight_decay=0.04,     # --weight-decay 0.04
                 schedule="cosine",      # --lr-scheduler linear_decay (docstring)
                 warmup_steps=10000,    # --warmup-updates 10000
                 batch_size=64,        # --batch-size 8 --update-freq 8
                 num_train_steps=91960,  # --max-update 91960
                 b1=0.9, b2=0.98, eps=1e-8,  # --adam-betas '(0.9, 0.98)' --adam-eps 1e-8
                 grad_clip_norm=1.0),    # --clip-norm 1.0
      preset_kwargs={name: kwargs for name, kwargs in
                     {"quick": SMALL, "small": SMALL, "tiny": TINY}.items()
                     if name in base_retrieval.PRESETS})
