"""Memory-compressed attention: exact softmax attention at factor 1 with an identity kernel, a
loop-by-loop numpy reference of the compression, the slot masks and the local blocks, exact
causality, padding appended after the real tokens, cross attention, and memory growth with
blocks.

Inputs are numpy; the pure function is jitted whole (op-by-op compiling dominates on CPU).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.memory_compressed import memory_compressed_attention
from models.attention.transformer import softmax_attention

HEADS, DIM = 2, 8
exact_attention = jax.jit(softmax_attention, static_argnames=("causal",))
compressed = jax.jit(memory_compressed_attention, static_argnames=("block_size", "causal"))


def qkv(seed, length=16, batch=2, kv_length=None):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, length, HEADS, DIM), np.float32)
  kv_shape = (batch, kv_length or length, HEADS, DIM)
  return q, rng.standard_normal(kv_shape, np.float32), rng.standard_normal(kv_shape, np.float32)


def kernels(factor, seed=3):
  rng = np.random.default_rng(seed)
  shape = (factor, HEADS, DIM, HEADS, DIM)
  scale = 1.0 / np.sqrt(factor * HEADS * DIM)
  return [scale * rng.standard_normal(shape, np.float32) for _ in range(2)] + [
      0.1 * rng.standard_normal((HEADS, DIM), np.float32) for _ in range(2)]


def padding_mask(valid, length=16):
  return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def reference(q, k, v, wk, wv, bk, bv, *, block_size, causal, q_mask, kv_mask):
  """The maths position by position: blocks, windows from the block start, zeroed padding,
  masked empty slots, causal slots ending at or before the query plus the first position."""
  batch, lq, heads, _ = q.shape
  lk, factor = k.shape[1], wk.shape[0]
  block = min(block_size, lk) if block_size else lk
  out = np.zeros(q.shape, np.float64)
  for b in range(batch):
    for start in range(0, lk, block):
      stop = start + block
      keys, vals, slot_end = [], [], []
      for j in range(-(-block // factor)):
        pos = [p for p in range(start + j * factor, start + (j + 1) * factor)
               if p < min(stop, lk) and kv_mask[b, p]]
        if pos:
          keys.append(sum(k[b, p].reshape(-1) @ wk[p - start - j * factor].reshape(
              heads * DIM, -1) for p in pos).reshape(heads, DIM) + bk)
          vals.append(sum(v[b, p].reshape(-1) @ wv[p - start - j * factor].reshape(
              heads * DIM, -1) for p in pos).reshape(heads, DIM) + bv)
          slot_end.append(start + (j + 1) * factor - 1)
      if causal and factor > 1 and kv_mask[b, start]:
        keys.append(k[b, start])
        vals.append(v[b, start])
        slot_end.append(-1)   # seen by every query of the block
      queries = range(start, min(stop, lq)) if block_size or causal else range(lq)
      for t in queries:
        seen = [i for i, end in enumerate(slot_end) if not causal or end <= t]
        if not q_mask[b, t] or not seen:
          continue
        for h in range(heads):
          logits = np.array([q[b, t, h] @ keys[i][h] for i in seen]) / np.sqrt(DIM)
          w = np.exp(logits - logits.max())
          out[b, t, h] = (w / w.sum()) @ np.stack([vals[i][h] for i in seen])
  return out


@pytest.mark.parametrize("causal", [False, True])
def test_factor_one_with_identity_kernel_is_exact_softmax_attention(causal):
  q, k, v = qkv(0)
  mask = padding_mask([11, 16])
  eye = np.eye(HEADS * DIM, dtype=np.float32).reshape(1, HEADS, DIM, HEADS, DIM)
  out = compressed(q, k, v, eye, eye, causal=causal, q_mask=mask, kv_mask=mask)
  want = exact_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("block_size,causal", [(0, False), (0, True), (6, False), (6, True)])
def test_matches_a_position_by_position_reference(block_size, causal):
  # length 16 with factor 3: a partial last window; blocks of 6 (two slots each) and a last
  # block of 4 (one full and one partial window); row 0 padded from 10 (a slot mixing real and
  # padded positions, 9..11, and fully padded slots).
  q, k, v = qkv(1)
  params = kernels(3)
  mask = padding_mask([10, 16])
  out = compressed(q, k, v, *params, block_size=block_size, causal=causal, q_mask=mask,
                   kv_mask=mask)
  want = reference(q, k, v, *params, block_size=block_size, causal=causal, q_mask=mask,
                   kv_mask=mask)
  np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)


def test_cross_attention_compresses_the_context():
  q, k, v = qkv(2, length=8, kv_length=13)
  params = kernels(3)
  q_mask, kv_mask = padding_mask([8, 5], 8), padding_mask([13, 7], 13)
  out = compressed(q, k, v, *params, q_mask=q_mask, kv_mask=kv_mask)
  want = reference(q, k, v, *params, block_size=0, causal=False, q_mask=q_mask,
                   kv_mask=kv_mask)
  np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)


@pytest.mark.parametrize("block_size", [0, 8])
def test_causal_form_is_exactly_causal(block_size):
  q, k, v = qkv(3, batch=1)
  other = qkv(4, batch=1)
  params = kernels(3)
  run = functools.partial(compressed, block_size=block_size, causal=True)
  base = np.asarray(run(q, k, v, *params))
  for t in (0, 1, 2, 4, 8, 13):
    future = (np.arange(16) > t)[None, :, None, None]
    changed = [np.where(future, 5.0 * o, x) for x, o in zip((q, k, v), other)]
    out = np.asarray(run(*changed, *params))
    assert np.abs(out[0, :t + 1] - base[0, :t + 1]).max() == 0.0, t
    assert np.abs(out[0, t + 1:] - base[0, t + 1:]).max() > 0
  # Position 1 sees only the first position (its window 0..2 is not complete yet).
  np.testing.assert_allclose(base[0, 1], v[0, 0], atol=1e-6)


@pytest.mark.parametrize("block_size,causal", [(0, False), (0, True), (6, False)])
def test_appended_padding_leaves_real_outputs_unchanged(block_size, causal):
  q, k, v = qkv(5, length=22)
  params = kernels(3)
  short = functools.partial(compressed, *(t[:, :13] for t in (q, k, v)), *params,
                            block_size=block_size, causal=causal)
  long = functools.partial(compressed, q, k, v, *params, block_size=block_size, causal=causal)
  out13 = np.asarray(short(q_mask=padding_mask([11, 13], 13), kv_mask=padding_mask([11, 13], 13)))
  out22 = np.asarray(long(q_mask=padding_mask([11, 13], 22), kv_mask=padding_mask([11, 13], 22)))
  np.testing.assert_allclose(out22[0, :11], out13[0, :11], atol=1e-6, rtol=0)
  np.testing.assert_allclose(out22[1, :13], out13[1, :13], atol=1e-6, rtol=0)
  assert np.abs(out22[:, 13:]).max() == 0.0


def test_blocks_make_memory_grow_linearly():
  from tests.test_attention import compiled_memory  # pylint: disable=import-outside-toplevel
  blocked = {"block_size": 256}
  ratio = compiled_memory("memory_compressed", 4096, kwargs=blocked) / compiled_memory(
      "memory_compressed", 2048, kwargs=blocked)
  assert ratio <= 2.5
  assert compiled_memory("memory_compressed", 4096) / compiled_memory(
      "memory_compressed", 2048) > 3.0   # without blocks: L^2 / f


def test_errors_name_the_setting():
  with pytest.raises(ValueError, match="factor=0"):
    q, k, v = (jnp.zeros((1, 4, HEADS, DIM)),) * 3
    registry.build_mixer("memory_compressed", {"factor": 0}).init(jax.random.key(0), q, k, v)
  q, k, v = qkv(6, length=4, kv_length=6)
  with pytest.raises(ValueError, match="self-attention only"):
    memory_compressed_attention(q, k, v, *kernels(3), block_size=2)


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("factor,block_size", [(3, 0), (3, 5), (2, 4), (1, 0)])
def test_decoding_step_by_step_matches_the_causal_forward(factor, block_size):
  """Windows complete at their last position; blocks restart the memory (block 5 is not a
  multiple of the factor 3, L = 11 not a multiple of either); one kv head for four q heads."""
  from tests.decode_steps import cache_shapes, mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(60, length=11, heads=4, kv_heads=1)
  mixer = registry.build_mixer("memory_compressed", {"factor": factor, "block_size": block_size},
                               causal=True)
  params = mixer.init(jax.random.key(0), q, q, q)["params"]
  noise = iter(jax.random.split(jax.random.key(1), 8))  # non-zero biases too
  params = jax.tree_util.tree_map(lambda p: p + 0.3 * jax.random.normal(next(noise), p.shape),
                                  params)
  full, stepped, cache = mixer_steps(mixer, q, k, v, params=params)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  block = block_size or 11
  assert cache_shapes(cache)["slot_key"] == (2, -(-block // factor), 4, 8)
  assert cache_shapes(cache)["window_key"] == (2, factor, 1, 8)
