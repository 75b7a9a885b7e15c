"""The survey's other two modes from the same shared stack (`models.blocks.Encoder`):

  DecoderLM       decoder-only: a causal stack over `inputs`, next-token logits `[b, l, vocab]`
                  (batch: inputs, mask).
  EncoderDecoder  an encoder over `inputs` and a causal decoder over `inputs2` whose blocks
                  cross-attend to the encoder's output (Vaswani et al. 2017, sec. 3.1); logits
                  `[b, l2, vocab]` (batch: inputs, mask, inputs2, mask2).

Both take `decode=True` for incremental decoding (models/generate.py drives it; the protocol
is models/attention/decoding.py). The output layer is a Dense over the vocabulary, or with
`tie_embeddings` the transposed token embedding scaled by 1/sqrt(emb_dim) (Press & Wolf 2017;
the scale as flax's WMT example's `logits_via_embedding`, whose token embedding has the same
normal(1.0) init as ours).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from models.blocks import Encoder


def _logits(hidden, stack: nn.Module, head: nn.Module | None):
  if head is not None:
    return head(hidden)
  table = stack.variables["params"]["embed"]["tokens"]["embedding"]
  return jnp.einsum("bld,vd->blv", hidden.astype(jnp.float32),
                    table.astype(jnp.float32)) / jnp.sqrt(hidden.shape[-1]).astype(jnp.float32)


class DecoderLM(nn.Module):
  """inputs `[b, l]`, mask `[b, l]` -> (logits `[b, l, vocab]`, aux): position t predicts token
  t + 1 and sees tokens <= t only (the stack is causal)."""
  decoder: Encoder
  vocab_size: int
  tie_embeddings: bool = False

  def setup(self):
    self.head = None if self.tie_embeddings else nn.Dense(self.vocab_size, name="head")

  def __call__(self, batch: Mapping[str, Any], deterministic=True, decode=False):
    hidden, _ = self.decoder(batch["inputs"], batch["mask"], deterministic, decode=decode)
    return _logits(hidden, self.decoder, self.head), {}


class EncoderDecoder(nn.Module):
  """Source `inputs`/`mask`, decoder inputs `inputs2`/`mask2` (targets shifted right behind a
  start token) -> (logits `[b, l2, vocab]`, aux)."""
  encoder: Encoder
  decoder: Encoder
  vocab_size: int
  tie_embeddings: bool = False

  def setup(self):
    self.head = None if self.tie_embeddings else nn.Dense(self.vocab_size, name="head")

  def __call__(self, batch: Mapping[str, Any], deterministic=True, decode=False):
    context, context_mask = self.encode(batch["inputs"], batch["mask"], deterministic)
    return self.decode(batch["inputs2"], batch["mask2"], context, context_mask, deterministic,
                       decode), {}

  def encode(self, inputs, mask, deterministic=True):
    """-> (the encoder's output `[b, l, e]`, its mask)."""
    return self.encoder(inputs, mask, deterministic)

  def decode(self, tokens, mask, context, context_mask, deterministic=True, decode=False):
    """The decoder over `tokens` given the encoder's output -> logits `[b, l2, vocab]`."""
    hidden, _ = self.decoder(tokens, mask, deterministic, context, context_mask, decode)
    return _logits(hidden, self.decoder, self.head)
