"""Builds the model a config asks for, given the task's metadata."""
from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from models.attention import registry

from models.classifier import EncoderClassifier, encoder_from_config
from models.decoder import DecoderLM, EncoderDecoder
from models.dual_encoder import DualEncoderClassifier, check_interaction

MODES = ("classify", "lm", "seq2seq")


def build_model(model_cfg: ml_collections.ConfigDict, *, vocab_size: int, num_classes: int,
                max_len: int, pair: bool = False, mode: str = "classify",
                target_len: int | None = None):
  """Returns a Linen module called as `model.apply(params, batch, deterministic)`. The encoder
  (one per model; shared by the dual encoder's towers) comes from `encoder_from_config`, which
  also carries `model_cfg.remat` (blocks in nn.remat) and refuses remat with reversible layers.

  `mode` (the task's): "classify" (the LRA tasks), "lm" (a causal decoder LM over `max_len`
  tokens predicting `num_classes` = its vocabulary), "seq2seq" (an encoder over `max_len`
  source tokens and a causal decoder over `target_len` tokens; models/decoder.py)."""
  if mode not in MODES:
    raise ValueError(f"task mode {mode!r}; expected one of {MODES}")
  if mode != "classify":
    return _decoder_model(model_cfg, vocab_size, num_classes, max_len, mode, target_len)
  if model_cfg.pooling not in ("CLS", "MEAN"):
    raise ValueError(f"config.model.pooling={model_cfg.pooling!r}; expected 'CLS' or 'MEAN'")
  if pair:  # two towers sharing one encoder (models/dual_encoder.py)
    return _dual_encoder(model_cfg, vocab_size, num_classes, max_len)
  encoder = encoder_from_config(model_cfg, vocab_size, max_len,
                                prepend_cls=model_cfg.pooling == "CLS")
  return EncoderClassifier(encoder=encoder, num_classes=num_classes,
                           mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling)


def _dual_encoder(model_cfg, vocab_size, num_classes, max_len) -> DualEncoderClassifier:
  # Retrieval's fields live in configs/base_retrieval.py; a config without them (built by hand)
  # gets LRA's behaviour: [u, v] and no CLS token per tower.
  interaction = model_cfg.get("interaction", "concat")
  check_interaction(interaction)  # at build time, before any data is read
  tower_cls_token = model_cfg.get("tower_cls_token", False)
  if tower_cls_token and model_cfg.pooling != "CLS":
    raise ValueError("config.model.tower_cls_token=True prepends a token that only "
                     f"config.model.pooling='CLS' reads; pooling is {model_cfg.pooling!r}")
  encoder = encoder_from_config(model_cfg, vocab_size, max_len, prepend_cls=tower_cls_token)
  return DualEncoderClassifier(encoder=encoder, num_classes=num_classes,
                               mlp_dim=model_cfg.mlp_dim, pooling=model_cfg.pooling,
                               interaction=interaction)


def _decoder_model(model_cfg, vocab_size, num_classes, max_len, mode, target_len):
  """A decoder LM or an encoder-decoder: the shared Encoder stack, causal for the decoder.
  config.model fields: tie_embeddings; for seq2seq num_decoder_layers (0 = num_layers),
  cross_attention (the variant of the decoder's cross-attention) and cross_attention_kwargs."""
  tie = model_cfg.get("tie_embeddings", False)
  if tie and num_classes != vocab_size:
    raise ValueError(f"config.model.tie_embeddings=True needs the output vocabulary "
                     f"({num_classes}) to be the input one ({vocab_size})")
  if mode == "lm":
    if model_cfg.get("xl_segment_length", 0):
      decoder = _xl_decoder(model_cfg, vocab_size, max_len)
    else:
      decoder = encoder_from_config(model_cfg, vocab_size, max_len, prepend_cls=False,
                                    causal=True, name="decoder")
    return DecoderLM(decoder=decoder, vocab_size=num_classes, tie_embeddings=tie)
  if model_cfg.get("xl_segment_length", 0):
    raise ValueError("config.model.xl_segment_length is a decoder-only (lm task) option")
  if target_len is None:
    raise ValueError("an encoder-decoder needs the decoder's length (target_len)")
  cross = model_cfg.get("cross_attention", "transformer")
  registry.check_supports(cross, cross=True)
  encoder = encoder_from_config(model_cfg, vocab_size, max_len, prepend_cls=False,
                                causal=False, name="encoder")
  decoder = encoder_from_config(
      model_cfg, vocab_size, target_len, prepend_cls=False, causal=True,
      num_layers=model_cfg.get("num_decoder_layers", 0) or model_cfg.num_layers,
      cross_attention=cross,
      cross_attention_kwargs=dict(model_cfg.get("cross_attention_kwargs", None) or {}),
      name="decoder")
  return EncoderDecoder(encoder=encoder, decoder=decoder, vocab_size=num_classes,
                        tie_embeddings=tie)


# Fields Transformer-XL's stack does not read (its attention is its own relative one, its
# block LRA's pre-LN layout): a config that sets any of them otherwise is refused, not ignored.
XL_FIXED = {"attention": "transformer", "positions": "none", "norm": "layer", "prenorm": True,
            "ffn": "mlp", "rezero": False, "remat": False, "reversible": False,
            "ffn_chunk_size": 0, "num_kv_heads": 0, "rope": False, "score_bias": "none",
            "qk_norm": False}


def _xl_decoder(model_cfg, vocab_size, max_len):
  """Transformer-XL's segment-recurrent stack (models/transformer_xl.py) as the decoder:
  config.model.xl_segment_length S (> 0 turns it on) and xl_memory_length M."""
  from models.transformer_xl import XLDecoder  # pylint: disable=import-outside-toplevel
  wrong = {k: model_cfg.get(k, v) for k, v in XL_FIXED.items() if model_cfg.get(k, v) != v}
  if wrong:
    raise ValueError(
        "config.model.xl_segment_length > 0 (Transformer-XL) runs XL's own relative attention "
        "in the pre-LN block; these fields would be ignored, set them to "
        + ", ".join(f"{k}={XL_FIXED[k]!r}" for k in wrong) + f" (got {wrong})")
  segment = model_cfg.xl_segment_length
  if max_len % segment:
    raise ValueError(f"config.model.xl_segment_length={segment} must divide the sequence "
                     f"length {max_len}")
  dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[model_cfg.dtype]
  return XLDecoder(vocab_size=vocab_size, emb_dim=model_cfg.emb_dim,
                   num_heads=model_cfg.num_heads, num_layers=model_cfg.num_layers,
                   qkv_dim=model_cfg.qkv_dim, mlp_dim=model_cfg.mlp_dim, max_len=max_len,
                   segment_length=segment, memory_length=model_cfg.get("xl_memory_length", 0),
                   dropout_rate=model_cfg.dropout_rate,
                   attention_dropout_rate=model_cfg.attention_dropout_rate,
                   activation=model_cfg.activation, dtype=dtype, name="decoder")
