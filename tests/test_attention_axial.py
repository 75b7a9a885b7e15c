"""Axial attention: exact softmax attention when the grid has one row, a position-by-position
numpy reference of row-then-column attention (bidirectional and the causal outer/inner
decomposition), exact causality reaching every raster predecessor, the grid layout, and padding.

Inputs are numpy; the pure function is jitted whole (op-by-op compiling dominates on CPU).
"""
import functools

import jax
import numpy as np
import pytest

from models.attention.axial import axial_attention, grid_shape
from models.attention.transformer import softmax_attention

HEADS, DIM = 2, 8
exact_attention = jax.jit(softmax_attention, static_argnames=("causal",))
axial = jax.jit(axial_attention, static_argnames=("shape", "causal"))


def qkv(seed, length=16, batch=2):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((batch, length, HEADS, DIM), np.float32) for _ in range(3)]


def padding_mask(valid, length=16):
  return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def softmax_row(q, keys, values):
  logits = keys @ q / np.sqrt(DIM)
  w = np.exp(logits - logits.max())
  return (w / w.sum()) @ values


def reference(q, k, v, cols, causal, mask):
  """Row then column attention, one position and head at a time (see the module docstring)."""
  batch, length = q.shape[:2]
  out = np.zeros(q.shape)
  pos = lambda i, j: i * cols + j
  real = lambda b, p: p < length and mask[b, p]
  rows = -(-length // cols)

  def row_step(b, i, j, h, causal_row):
    seen = [pos(i, c) for c in range(cols) if real(b, pos(i, c)) and (not causal_row or c <= j)]
    return softmax_row(q[b, pos(i, j), h], k[b, seen, h], v[b, seen, h])

  for b in range(batch):
    for p in range(length):
      if not mask[b, p]:
        continue
      i, j = divmod(p, cols)
      for h in range(HEADS):
        inter = [r for r in range(rows) if real(b, pos(r, j)) and (not causal or r <= i)]
        values = np.stack([row_step(b, r, j, h, causal and r == i) for r in inter])
        out[b, p, h] = softmax_row(q[b, p, h], k[b, [pos(r, j) for r in inter], h], values)
  return out


@pytest.mark.parametrize("causal", [False, True])
def test_one_row_is_exact_softmax_attention(causal):
  q, k, v = qkv(0)
  mask = padding_mask([11, 16])
  for shape in ((1, 16), (1, 20)):
    out = axial(q, k, v, shape=shape, causal=causal, q_mask=mask, kv_mask=mask)
    want = exact_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape,causal", [((), False), ((), True), ((3, 5), False),
                                          ((3, 5), True)])
def test_matches_a_position_by_position_reference(shape, causal):
  # length 14: the fold is 4 x 4 with two internal pads; (3, 5) has one. Row 0 padded from 9.
  q, k, v = qkv(1, length=14)
  mask = padding_mask([9, 14], 14)
  out = axial(q, k, v, shape=shape, causal=causal, q_mask=mask, kv_mask=mask)
  want = reference(q, k, v, grid_shape(14, shape)[1], causal, mask)
  np.testing.assert_allclose(out, want, atol=2e-5, rtol=0)


def test_causal_form_reaches_exactly_the_raster_past():
  q, k, v = qkv(2, batch=1)
  run = jax.jit(functools.partial(axial_attention, shape=(4, 4), causal=True))
  grads_at = jax.jit(jax.grad(lambda q, k, v, p: run(q, k, v)[0, p].sum(), argnums=(0, 1, 2)))
  for p in (0, 3, 6, 9, 15):   # (2, 1) = 9: rows 0-1 whole, row 2 up to column 1
    grads = grads_at(q, k, v, p)
    for which, g in zip("qkv", grads):
      assert np.abs(np.asarray(g[0, p + 1:])).max(initial=0.0) == 0.0, (p, which)
    reached = np.abs(np.asarray(grads[2][0])).max(axis=(1, 2)) > 0
    assert reached[:p + 1].all(), (p, np.flatnonzero(~reached[:p + 1]))
  # Changing the future moves no earlier output at all.
  other = qkv(3, batch=1)
  base = np.asarray(run(q, k, v))
  for t in (2, 5, 12):
    future = (np.arange(16) > t)[None, :, None, None]
    out = np.asarray(run(*(np.where(future, 4.0 * o, x) for x, o in zip((q, k, v), other))))
    assert np.abs(out[0, :t + 1] - base[0, :t + 1]).max() == 0.0


def test_bidirectional_form_reaches_every_position_in_one_layer():
  q, k, v = qkv(4, batch=1)
  run = jax.jit(functools.partial(axial_attention, shape=(4, 4)))
  grad = jax.grad(lambda v: run(q, k, v)[0, 5].sum())(v)
  assert (np.abs(np.asarray(grad[0])).max(axis=(1, 2)) > 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_appended_padding_with_a_given_grid_changes_nothing(causal):
  q, k, v = qkv(5)
  run = functools.partial(axial, shape=(4, 4), causal=causal)
  short = np.asarray(run(*(t[:, :13] for t in (q, k, v)), q_mask=padding_mask([10, 13], 13),
                         kv_mask=padding_mask([10, 13], 13)))
  long = np.asarray(run(q, k, v, q_mask=padding_mask([10, 13]), kv_mask=padding_mask([10, 13])))
  np.testing.assert_allclose(long[0, :10], short[0, :10], atol=1e-6, rtol=0)
  np.testing.assert_allclose(long[1, :13], short[1, :13], atol=1e-6, rtol=0)


def test_grid_layout_and_errors():
  assert grid_shape(16) == (4, 4) and grid_shape(17) == (4, 5) and grid_shape(1024) == (32, 32)
  assert grid_shape(1, ()) == (1, 1) and grid_shape(1000, (32, 32)) == (32, 32)
  with pytest.raises(ValueError, match="CLS token"):
    grid_shape(1025, (32, 32))
  with pytest.raises(ValueError, match="expected \\(\\) or \\(rows, cols\\)"):
    grid_shape(16, (16,))


def test_memory_grows_as_length_to_the_one_and_a_half():
  from tests.test_attention import compiled_memory  # pylint: disable=import-outside-toplevel
  fold = {"shape": ()}
  ratio = compiled_memory("axial", 4096, kwargs=fold) / compiled_memory("axial", 1024, kwargs=fold)
  assert ratio <= 10.0, ratio   # 4^1.5 = 8 for the near-square fold; exact attention: 16



# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("shape", [(), (3, 5)])
def test_decoding_step_by_step_matches_the_causal_forward(shape):
  """L = 13: the fold (4 x 4) and a given grid (3 x 5) with a partial last row."""
  from models.attention import registry as _registry
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(80, length=13, heads=4, kv_heads=2)
  mixer = _registry.build_mixer("axial", {"shape": shape}, causal=True)
  full, stepped, cache = mixer_steps(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["cached_key"].shape == (2, 13, 2, 8)
