"""Builds the model a config asks for, given the task's metadata."""
from __future__ import annotations

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
    decoder = encoder_from_config(model_cfg, vocab_size, max_len, prepend_cls=False,
                                  causal=True, name="decoder")
    return DecoderLM(decoder=decoder, vocab_size=num_classes, tie_embeddings=tie)
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
