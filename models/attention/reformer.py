"""Reformer LSH attention (Kitaev, Kaiser and Levskaya 2020, "Reformer: The Efficient
Transformer", sec. 2).

- Shared-QK: the projected query is also the key, the key normalised to unit length,
  k_j = q_j / ||q_j|| (sec. 2, "Shared-QK Transformer"); the `k` projection is unused.
- Angular LSH: h(x) = argmax([xR; -xR]) with a random rotation R of shape [d, n_buckets / 2]
  per head and hash round (never trained). With `redraw` (default) every training call draws
  new rotations from the step's "dropout" rng, which flax folds with the layer's path (so
  layers differ, and a resumed run redraws the same ones), as the authors' trax
  `LSHSelfAttention` does: its hash rng lives in the layer state (one per head) and is split
  on every forward pass. Deterministic calls (evaluation), and training with `redraw=False`,
  use fixed rotations from `seed` and the layer's path. (LRA's reformer_attention.py drew them
  from PRNGKey(0) in every layer and never redrew them.)
- Tokens are sorted by (bucket, position), the sorted sequence is cut into chunks of
  `chunk_len`, and each chunk attends to itself and the chunk before it (P~_i of sec. 2).
  A token does not attend to itself unless nothing else is allowed (its logit is set to
  -1e5, sec. 2 "Causal masking for shared-QK attention"). Padded keys are masked (and
  padded tokens are sorted after every real one, so padding never moves a real token).
- `n_hashes` rounds (sec. 2 "Multi-round LSH attention"): a key that shares a window with the
  query in N_ij rounds gets logit - log N_ij in each, and round outputs are combined with
  weights exp(logsumexp_r - logsumexp over rounds); together this is exactly softmax
  attention over the union of the rounds' windows.
- Causal form: keys at later positions are masked, comparing the positions carried along
  the sort (sec. 2). This is only approximately causal, in the paper as here: which past keys
  share a query's chunk depends on where the sort puts every token, the future ones included,
  so changing future tokens moves earlier outputs (no gradient reaches the future tokens: the
  dependence runs through the sort). A chunking that depended on the past alone would not be
  the paper's; the registry marks the variant `causal_exact=False` and building it causally
  warns.

Memory is O(n_hashes^2 * L * chunk_len); no [L, L] array is built.
Defaults are the LRA repository's (chunk_len 10, n_hashes 1, n_buckets 10).
"""
from __future__ import annotations

import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.registry import register

SELF_LOGIT = -1e5  # sec. 2: attending to oneself only when nothing else is allowed


def unit_length(x, eps=1e-6):
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def lsh_buckets(x, *, n_buckets: int, n_hashes: int, rng):
  """Angular LSH (sec. 2). x: `[b, h, l, d]` -> int buckets `[b, h, n_hashes, l]`; the
  rotations (one per head and round) are drawn from the PRNG key `rng`."""
  if n_buckets == 1:
    return jnp.zeros(x.shape[:2] + (n_hashes, x.shape[2]), jnp.int32)
  if n_buckets % 2:
    raise ValueError(f"reformer n_buckets={n_buckets} must be even (or 1): buckets are "
                     "argmax over [xR; -xR]")
  heads, depth = x.shape[1], x.shape[3]
  rotations = jax.random.normal(rng, (heads, n_hashes, depth, n_buckets // 2), jnp.float32)
  rotated = jnp.einsum("bhld,hrdk->bhrlk", x.astype(jnp.float32), rotations)
  return jnp.argmax(jnp.concatenate([rotated, -rotated], axis=-1), axis=-1).astype(jnp.int32)


def sort_by_bucket(buckets, valid, n_buckets: int):
  """Permutation `[b, h, r, l]` sorting positions by (bucket, position); invalid (padded)
  positions get bucket `n_buckets`, i.e. go after every real token."""
  length = buckets.shape[-1]
  buckets = jnp.where(valid[:, None, None, :], buckets, n_buckets)
  sort_key = buckets * length + jnp.arange(length)
  return jnp.argsort(sort_key, axis=-1)


def _gather(x, order):
  """x `[b, h, l, ...]`, order `[b, h, r, l]` -> `[b, h, r, l, ...]`."""
  x = jnp.broadcast_to(x[:, :, None], order.shape[:3] + x.shape[2:])
  index = order.reshape(order.shape + (1,) * (x.ndim - 4))
  return jnp.take_along_axis(x, index, axis=3)


def _with_previous_chunk(x, fill):
  """`[b, h, r, n, c, ...]` -> `[b, h, r, n, 2c, ...]`: each chunk and the one before it
  (chunk 0 has none: `fill`)."""
  previous = jnp.concatenate([jnp.full_like(x[:, :, :, :1], fill), x[:, :, :, :-1]], axis=3)
  return jnp.concatenate([x, previous], axis=4)


def _rounds_sharing_a_window(chunk_of, q_pos, k_pos):
  """N_ij `[b, h, r, n, c, 2c]`: in how many rounds key j is in query i's chunk or the one
  before it. chunk_of `[b, h, r, l]` (chunk of each position per round); q_pos / k_pos the
  positions in round r's chunks (k_pos -1 where there is no previous chunk)."""
  per_position = chunk_of.transpose(0, 1, 3, 2)                     # [b, h, l, r']
  gather = lambda pos: jnp.take_along_axis(
      per_position[:, :, None], jnp.maximum(pos, 0).reshape(pos.shape[:3] + (-1, 1)),
      axis=3).reshape(pos.shape + (-1,))
  q_chunk, k_chunk = gather(q_pos)[..., :, None, :], gather(k_pos)[..., None, :, :]
  together = (k_chunk == q_chunk) | (k_chunk == q_chunk - 1)
  return jnp.maximum(together.sum(-1), 1).astype(jnp.float32)


def lsh_attention(q, v, *, q_mask=None, kv_mask=None, n_buckets=10, n_hashes=1, chunk_len=10,
                  hash_rng=None, causal=False, dropout_rate=0.0, dropout_rng=None,
                  deterministic=True):
  """Pure function. q (shared query/key) and v: `[b, l, h, d]`; masks bool `[b, l]`;
  `hash_rng` the PRNG key of the hash rotations (None: key 0)."""
  batch, length, heads, depth = q.shape
  if kv_mask is None:
    kv_mask = q_mask if q_mask is not None else jnp.ones((batch, length), bool)
  padded_len = -(-length // chunk_len) * chunk_len
  extra = padded_len - length
  pad = lambda x: jnp.pad(x, [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2))
  valid = pad(kv_mask.astype(bool))                                 # [b, lp]
  qh = pad(q).transpose(0, 2, 1, 3)                                  # [b, h, lp, d]
  vh = pad(v).transpose(0, 2, 1, 3)
  keys = unit_length(qh)

  if hash_rng is None:
    hash_rng = jax.random.key(0)
  buckets = lsh_buckets(jax.lax.stop_gradient(keys), n_buckets=n_buckets,
                        n_hashes=n_hashes, rng=hash_rng)
  order = jax.lax.stop_gradient(sort_by_bucket(buckets, valid, n_buckets))  # [b, h, r, lp]
  chunks = padded_len // chunk_len
  to_chunks = lambda x: x.reshape(x.shape[:3] + (chunks, chunk_len) + x.shape[4:])
  sq = to_chunks(_gather(qh, order))                                 # [b, h, r, n, c, d]
  sk = _with_previous_chunk(to_chunks(_gather(keys, order)), 0.0)    # [b, h, r, n, 2c, d]
  sv = _with_previous_chunk(to_chunks(_gather(vh, order)), 0.0)
  q_pos = to_chunks(order)                                           # [b, h, r, n, c]
  k_pos = _with_previous_chunk(q_pos, -1)
  k_valid = _with_previous_chunk(
      to_chunks(jnp.take_along_axis(jnp.broadcast_to(valid[:, None, None], order.shape),
                                    order, axis=-1)), False)

  logits = jnp.einsum("bhrnqd,bhrnkd->bhrnqk", sq, sk) / jnp.sqrt(depth).astype(q.dtype)
  allowed = k_valid[..., None, :]
  if causal:
    allowed = allowed & (k_pos[..., None, :] <= q_pos[..., :, None])
  undo = jnp.argsort(order, axis=-1)                                 # sorted slot of a position
  if n_hashes > 1:  # sec. 2: a key seen in N_ij rounds gets -log N_ij in each
    logits = logits - jnp.log(_rounds_sharing_a_window(undo // chunk_len, q_pos, k_pos))
  logits = jnp.where(allowed, logits, masks.big_negative(logits.dtype))
  logits = jnp.where(k_pos[..., None, :] == q_pos[..., :, None], SELF_LOGIT, logits)
  lse = jax.nn.logsumexp(logits, axis=-1, keepdims=True)             # [b, h, r, n, c, 1]
  weights = jnp.exp(logits - lse)
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)  # flat draw: fast compile
  out = jnp.einsum("bhrnqk,bhrnkd->bhrnqd", weights, sv)

  # Undo the sort of every round, then combine the rounds (sec. 2, multi-round LSH).
  flat = lambda x: x.reshape(x.shape[:3] + (padded_len,) + x.shape[5:])
  out = jnp.take_along_axis(flat(out), undo[..., None], axis=3)     # [b, h, r, lp, d]
  lse = jnp.take_along_axis(flat(lse)[..., 0], undo, axis=3)         # [b, h, r, lp]
  round_weights = jax.nn.softmax(lse, axis=2)[..., None]
  out = (out * round_weights).sum(axis=2).transpose(0, 2, 1, 3)[:, :length]
  return masks.zero_padded_queries(out.astype(v.dtype), q_mask)


@register("reformer", causal=True, cross=False, causal_exact=False,
          causal_caveat="LSH chunk boundaries depend on the hashes of future tokens, so "
          "changing the future moves earlier outputs (Kitaev et al. 2020, sec. 2)",
          decode_caveat="its causal form is only approximately causal (the sort by LSH bucket "
          "and the chunk boundaries depend on future tokens' hashes), so no token-by-token "
          "computation reproduces it (Kitaev et al. 2020, sec. 2)")
class ReformerAttention(nn.Module):
  """LSH attention over shared query/keys (the `k` given by the projection base is unused).
  Rotations: redrawn every training call from the "dropout" rng when `redraw`, otherwise
  (and always when deterministic) fixed, from `seed` and this layer's path."""
  n_buckets: int = 10
  n_hashes: int = 1
  chunk_len: int = 10
  redraw: bool = True   # new hash rotations every training step (the authors' trax code)
  seed: int = 0
  causal: bool = False
  dropout_rate: float = 0.0

  def hash_rng(self, deterministic: bool):
    """The key of this call's rotations: the step's rng when redrawing, else per layer."""
    if self.redraw and not deterministic:
      return self.make_rng("dropout")  # flax folds in this module's path: layers differ
    path = "/".join(str(part) for part in self.scope.path)
    return jax.random.fold_in(jax.random.key(self.seed), zlib.crc32(path.encode()) & 0x7FFFFFFF)

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    if q.shape[1] != k.shape[1]:
      raise ValueError("attention 'reformer' is self-attention only (shared QK): query length "
                       f"{q.shape[1]} != key length {k.shape[1]}")
    for field in ("n_buckets", "n_hashes", "chunk_len"):
      if getattr(self, field) < 1:
        raise ValueError(f"config.model.attention_kwargs.{field}={getattr(self, field)} "
                         "must be >= 1")
    hash_rng = self.hash_rng(deterministic)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return lsh_attention(q, v, q_mask=q_mask, kv_mask=kv_mask, n_buckets=self.n_buckets,
                         n_hashes=self.n_hashes, chunk_len=self.chunk_len, hash_rng=hash_rng,
                         causal=self.causal, dropout_rate=self.dropout_rate, dropout_rng=rng,
                         deterministic=deterministic)
