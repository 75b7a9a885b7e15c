"""Memory-compressed attention (Liu et al. 2018, "Generating Wikipedia by Summarizing Long
Sequences", ICLR; sec. 4.2.4, Figure 1 and sec. 4.2.3 for the local blocks).

After the query/key/value projections, the keys and the values are shortened along the length
by a strided 1-D convolution whose kernel size equals its stride (`factor`, the paper's 3): slot
j of the compressed memory is a learned linear map of the `factor` consecutive positions
j*f .. j*f + f - 1 (each convolution mixes all heads' channels, as a convolution over the key
embedding does). Every query then attends with exact softmax(q K_c^T / sqrt(d)) V_c to the
ceil(L / f) compressed slots; the number of queries is unchanged. Time and memory O(L^2 / f).

`block_size` > 0 ("local" blocks, sec. 4.2.3): the sequence is cut into blocks of `block_size`
positions and the memory-compressed attention runs inside each block on its own (keys
compressed per block, windows starting at the block's first position): O(L * block_size / f).
0 (default) = one block holding the whole sequence, the paper's "M" layer.

Causal form (the decoder the paper trains; tensor2tensor's `multihead_self_attention_reduced`
with its mask, and mesh-tensorflow's `multihead_self_attention_memory_compressed` with
`mask_right`): a query at position t sees slot j only when the slot's whole window is at or
before it, (j + 1) * f - 1 <= t (mesh-tensorflow's mask; tensor2tensor's excludes the slot that
ends at t as well). Queries before the first complete window would see nothing, so, as in
tensor2tensor, the first position's own key and value are prepended as an extra memory slot
that every query of the block sees. That slot exists only causally and for factor > 1: with
factor 1 every query already sees its own slot, and bidirectional queries see every slot (so
factor 1 with an identity kernel is exact softmax attention; tensor2tensor prepends it always).
Exactly causal: a slot holding any position after t gets zero weight.

Padding: padded keys/values are zeroed before the convolution, so a slot mixing real and
padded positions is a function of its real positions only; a slot with no real position is
masked. Windows start at position 0 (or the block start), so padding appended after the real
tokens leaves every real slot as it is and only adds masked ones. Outputs at padded queries are
zero. Cross attention (no blocks, not causal): the context's keys and values are compressed.

Deviations: the convolution acts on the projected keys and values (Figure 1) rather than on the
layer input before the key/value projections (tensor2tensor's `conv_elems_1d(x)`), which
differ only by the order of two linear maps; a length that is not a multiple of `factor` is
zero-padded up (tensor2tensor drops the incomplete last window: "valid" convolution).

Incremental decoding (`decode=True`, registry kind "kv": the memory grows as L / f without
blocks): a causal query sees only complete windows of its own block, so the cache holds the
block's compressed slots `[b, ceil(B / f), h, d]` (B = block_size, or L without blocks), the
raw keys/values of the window being filled `[b, f, kv_heads, d]` and the block's first
position (the extra slot). A slot is compressed by the same convolution the step its window
completes, the step it becomes visible ((j + 1) * f - 1 <= t); slots of an earlier block are
overwritten before they can be seen.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import blocking, decoding, kv_cache, masks
from models.attention.registry import register


def compress(x, valid, kernel, bias, factor):
  """Strided convolution (kernel = stride = factor) along axis 2 of `x` `[b, n, l, h, d]`.

  `valid` bool `[b, n, l]`; invalid positions are zeroed first. `kernel` `[f, h, d, h, d]`,
  `bias` `[h, d]` or None. Returns `([b, n, ceil(l / f), h, d], slot validity [b, n, m])`."""
  x = jnp.where(valid[..., None, None], x, 0.0)
  length = x.shape[2]
  m = -(-length // factor)
  extra = m * factor - length
  if extra:
    x = jnp.pad(x, [(0, 0), (0, 0), (0, extra), (0, 0), (0, 0)])
    valid = jnp.pad(valid, [(0, 0), (0, 0), (0, extra)])
  windows = x.reshape(*x.shape[:2], m, factor, *x.shape[3:])      # [b, n, m, f, h, d]
  out = jnp.einsum("bnmfhd,fhdge->bnmge", windows, kernel.astype(x.dtype),
                   preferred_element_type=jnp.promote_types(x.dtype, jnp.float32))
  if bias is not None:
    out = out + bias
  slot_valid = valid.reshape(*valid.shape[:2], m, factor).any(axis=-1)
  return out, slot_valid


def memory_compressed_attention(q, k, v, key_kernel, value_kernel, key_bias=None,
                                value_bias=None, *, block_size=0, causal=False, q_mask=None,
                                kv_mask=None, dropout_rate=0.0, dropout_rng=None,
                                deterministic=True):
  """Pure function. q `[b, lq, h, d]`, k/v `[b, lk, h, d]`; kernels `[f, h, d, h, d]`
  (f = the compression factor), biases `[h, d]` or None; masks bool `[b, l]`."""
  factor = key_kernel.shape[0]
  if factor < 1 or value_kernel.shape[0] != factor:
    raise ValueError(f"memory_compressed: kernels of widths {factor}, {value_kernel.shape[0]}")
  if block_size < 0:
    raise ValueError(f"memory_compressed block_size={block_size}; expected 0 (no blocks) or > 0")
  batch, lq, heads, depth = q.shape
  lk = k.shape[1]
  if (block_size or causal) and lq != lk:
    raise ValueError(f"memory_compressed with local blocks or causal masking is self-attention "
                     f"only: {lq} queries, {lk} keys")
  if block_size:   # sec. 4.2.3: independent blocks of block_size positions
    block = min(block_size, lk)
    qb, kb, vb = (blocking.to_blocks(blocking.pad_to_blocks(t, block), block) for t in (q, k, v))
    valid = blocking.to_blocks(blocking.key_validity(kv_mask, batch, lk, block), block)
  else:            # one block: the whole sequence (or the whole context)
    qb, kb, vb = q[:, None], k[:, None], v[:, None]
    valid = (jnp.ones((batch, lk), bool) if kv_mask is None else kv_mask.astype(bool))[:, None]
  compute = jnp.promote_types(q.dtype, jnp.float32)
  kc, slot_valid = compress(kb, valid, key_kernel, key_bias, factor)   # [b, n, m, h, d]
  vc, _ = compress(vb, valid, value_kernel, value_bias, factor)
  kc, vc = kc.astype(q.dtype), vc.astype(compute)
  slot_end = (jnp.arange(kc.shape[2]) + 1) * factor - 1                # last position of slot j
  if causal and factor > 1:
    # tensor2tensor's first-position slot, prepended to the memory: every query of the block
    # sees it (slot end -1), so queries before the first complete window see something.
    kc = jnp.concatenate([kb[:, :, :1], kc], axis=2)
    vc = jnp.concatenate([jnp.where(valid[:, :, :1, None, None], vb[:, :, :1], 0.0)
                          .astype(compute), vc], axis=2)
    slot_valid = jnp.concatenate([valid[:, :, :1], slot_valid], axis=2)
    slot_end = jnp.concatenate([jnp.array([-1]), slot_end])
  logits = jnp.einsum("bnqhd,bnmhd->bnhqm", qb, kc,
                      preferred_element_type=compute) / jnp.sqrt(depth).astype(compute)
  allowed = slot_valid[:, :, None, None, :]                           # [b, n, 1, 1, m]
  if causal:   # only slots whose whole window is at or before the query (exactly causal)
    allowed = allowed & (slot_end[None, :] <= jnp.arange(qb.shape[2])[:, None])
  weights = jax.nn.softmax(jnp.where(allowed, logits, masks.big_negative(compute)), axis=-1)
  # A query with no slot to see (a context of padding only) gets zeros, not a uniform average.
  weights = weights * allowed.any(axis=-1, keepdims=True)
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  out = jnp.einsum("bnhqm,bnmhd->bnqhd", weights, vc)
  out = blocking.from_blocks(out)[:, :lq]
  return masks.zero_padded_queries(out.astype(q.dtype), q_mask)


@register("memory_compressed", causal=True, cross=True, subquadratic=False, decode="kv")
class MemoryCompressedAttention(nn.Module):
  """Softmax attention over keys/values compressed by a strided convolution (`factor`)."""
  factor: int = 3          # the paper's kernel size = stride 3 (sec. 4.2.4)
  block_size: int = 0      # 0: no local blocks; > 0: compressed attention within blocks
  use_bias: bool = True    # the convolutions' bias (tensor2tensor's Conv2D has one)
  causal: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if self.factor < 1:
      raise ValueError(f"memory_compressed factor={self.factor} "
                       "(config.model.attention_kwargs); expected >= 1")
    heads, depth = q.shape[2], k.shape[3]  # k has q's heads but in decode mode (kv heads)
    shape = (self.factor, heads, depth, heads, depth)
    # A convolution's default: LeCun normal over fan_in = factor * channels.
    init = nn.initializers.lecun_normal(in_axis=(0, 1, 2), out_axis=(3, 4))
    kernels = [self.param(f"{which}_conv", init, shape) for which in ("key", "value")]
    biases = [self.param(f"{which}_conv_bias", nn.initializers.zeros, (heads, depth))
              if self.use_bias else None for which in ("key", "value")]
    if decode:
      stepping, index = decoding.decode_index(self)
      if stepping:
        return self._decode(q, k, v, index, kernels, biases)
      self._cache(q, k, v)
      k, v = decoding.repeat_kv(k, heads), decoding.repeat_kv(v, heads)
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    return memory_compressed_attention(
        q, k, v, kernels[0], kernels[1], biases[0], biases[1], block_size=self.block_size,
        causal=self.causal, q_mask=q_mask, kv_mask=kv_mask, dropout_rate=self.dropout_rate,
        dropout_rng=rng, deterministic=deterministic)

  def _cache(self, q, k, v):
    """The decoding cache, sized by the init call's length L (module docstring)."""
    b, length, heads, depth = q.shape
    block = min(self.block_size, length) if self.block_size else length
    slots = -(-block // self.factor)
    compute = jnp.promote_types(q.dtype, jnp.float32)
    variables = {
        "block_length": (lambda: jnp.asarray(block, jnp.int32)),
        "slot_key": (lambda: jnp.zeros((b, slots, heads, depth), q.dtype)),
        "slot_value": (lambda: jnp.zeros((b, slots, heads, depth), compute)),
        "window_key": (lambda: jnp.zeros((b, self.factor) + k.shape[2:], k.dtype)),
        "window_value": (lambda: jnp.zeros((b, self.factor) + v.shape[2:], v.dtype))}
    if self.factor > 1:
      variables["first_key"] = lambda: jnp.zeros((b, 1) + k.shape[2:], k.dtype)
      variables["first_value"] = lambda: jnp.zeros((b, 1) + v.shape[2:], v.dtype)
    return {name: self.variable("cache", name, init) for name, init in variables.items()}

  def _decode(self, q, k, v, index, kernels, biases):
    """Token at position `index`: its block's complete compressed windows (and first slot)."""
    decoding.check_one_token(q, "memory_compressed")
    b, _, heads, depth = q.shape
    f = self.factor
    cache = self._cache(q, k, v)
    s = index % cache["block_length"].value  # position inside the block
    offset, slot = s % f, s // f
    window = {}
    for name, new in (("key", k), ("value", v)):
      buffer = jax.lax.dynamic_update_slice(cache[f"window_{name}"].value, new, (0, offset, 0, 0))
      cache[f"window_{name}"].value = window[name] = buffer
      if f > 1:
        cache[f"first_{name}"].value = jnp.where(s == 0, new, cache[f"first_{name}"].value)
    complete = offset == f - 1  # the window's slot is visible from its last position on
    ones = jnp.ones((b, 1, f), bool)
    for name, kernel, bias in (("key", kernels[0], biases[0]), ("value", kernels[1], biases[1])):
      x = decoding.repeat_kv(window[name], heads)[:, None]         # [b, 1, f, h, d]
      compressed, _ = compress(x, ones, kernel, bias, f)          # [b, 1, 1, h, d]
      var = cache[f"slot_{name}"]
      updated = jax.lax.dynamic_update_slice(
          var.value, compressed[:, 0].astype(var.value.dtype), (0, slot, 0, 0))
      var.value = jnp.where(complete, updated, var.value)
    slots = cache["slot_key"].value.shape[1]
    keys, values = cache["slot_key"].value, cache["slot_value"].value
    allowed = (jnp.arange(slots) + 1) * f - 1 <= s
    if f > 1:  # the block's first position, seen by every query of the block
      first_k = decoding.repeat_kv(cache["first_key"].value, heads).astype(keys.dtype)
      first_v = decoding.repeat_kv(cache["first_value"].value, heads).astype(values.dtype)
      keys = jnp.concatenate([first_k, keys], axis=1)
      values = jnp.concatenate([first_v, values], axis=1)
      allowed = jnp.concatenate([jnp.ones((1,), bool), allowed])
    return kv_cache.attend_one(q, keys, values, allowed[None, None])
