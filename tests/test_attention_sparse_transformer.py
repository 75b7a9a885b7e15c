"""Sparse Transformer: the block-wise computation equals attention under the paper's pattern
(sec. 4.2) built densely here, for both patterns, both factorisations, causal and not; the
default block length grows like sqrt(L), so compiled memory grows like L*sqrt(L)."""
import jax
import numpy as np
import pytest

from models.attention import registry, sparse_transformer
from models.attention.sparse_transformer import sparse_transformer_attention
from tests import attention_cases
from models.attention.transformer import softmax_attention
from tests.dense_pattern_reference import (pattern_attention, ragged_mask, random_qkv,
                                          run_jitted)


def pattern_parts(pattern, length, stride, c, causal):
  """A(1), A(2) as dense `[L, L]` masks (query, key), straight from the definitions."""
  i, j = np.arange(length)[:, None], np.arange(length)[None, :]
  if pattern == "strided":
    part_1 = np.abs(i - j) <= stride
    part_2 = (i - j) % stride == 0
  else:
    part_1 = i // stride == j // stride
    part_2 = np.broadcast_to(j % stride >= stride - c, (length, length))
  if causal:
    part_1, part_2 = part_1 & (j <= i), part_2 & (j <= i)
  return part_1, part_2


CASES = [(p, f, causal) for p in ("fixed", "strided") for f in ("merged", "heads")
         for causal in (False, True)]


@pytest.mark.parametrize("pattern,factorisation,causal", CASES)
def test_matches_dense_pattern(pattern, factorisation, causal):
  length, stride, c, heads = 23, 4, 2, 3  # ragged length; odd head count for "heads"
  q, k, v = random_qkv(0, length=length, heads=heads)
  mask = ragged_mask(length, [17, length])
  part_1, part_2 = pattern_parts(pattern, length, stride, c, causal)
  if factorisation == "merged":
    allowed = part_1 | part_2
  else:
    allowed = np.stack([part_1, part_1, part_2])  # ceil(3 / 2) heads on A(1)
  got = run_jitted(sparse_transformer_attention, q, k, v, mask, pattern=pattern,
                   block_size=stride, summary_size=c, factorisation=factorisation,
                   causal=causal)
  want = pattern_attention(q, k, v, allowed, q_mask=mask, kv_mask=mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("pattern", ["fixed", "strided"])
@pytest.mark.parametrize("causal", [False, True])
def test_large_stride_merged_is_exact(pattern, causal):
  # strided: A(1) alone covers every key when l >= L; fixed: one block holds everything.
  q, k, v = random_qkv(1, length=12)
  mask = ragged_mask(12, [8, 12])
  got = run_jitted(sparse_transformer_attention, q, k, v, mask, pattern=pattern,
                   block_size=16, summary_size=4, causal=causal)
  want = run_jitted(softmax_attention, q, k, v, mask, causal=causal)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_summary_heads_before_first_summary_are_zero():
  # Causal "heads" fixed pattern: a query before the first summary column has an empty A(2).
  q, k, v = random_qkv(2, batch=1, length=16)
  out = run_jitted(sparse_transformer_attention, q, k, v, None, pattern="fixed", block_size=8,
                   summary_size=2, factorisation="heads", causal=True)
  np.testing.assert_array_equal(np.asarray(out[0, :6, 1]), 0.0)
  assert np.abs(np.asarray(out[0, 6:, 1])).max() > 0


def test_strided_part_2_reaches_far_keys():
  q, k, v = random_qkv(3, batch=1, length=32)
  f = lambda v: sparse_transformer_attention(q, k, v, pattern="strided", block_size=4,
                                             causal=True)[0, 30].sum()
  touched = np.abs(np.asarray(jax.jit(jax.grad(f))(v)[0])).sum(axis=(1, 2)) > 0
  i, j = 30, np.arange(32)
  np.testing.assert_array_equal(touched, (j <= i) & ((i - j <= 4) | ((i - j) % 4 == 0)))


@pytest.mark.parametrize("kwargs,match", [
    ({"pattern": "dilated"}, "pattern="), ({"factorisation": "layers"}, "factorisation="),
    ({"summary_size": 9, "block_size": 8}, "summary_size="), ({"block_size": -1}, "block_size=")])
def test_bad_settings_are_errors(kwargs, match):
  q, k, v = random_qkv(4)
  with pytest.raises(ValueError, match=match):
    sparse_transformer_attention(q, k, v, **kwargs)


def test_heads_factorisation_needs_two_heads():
  q, k, v = random_qkv(5, heads=1)
  with pytest.raises(ValueError, match="at least 2 heads"):
    sparse_transformer_attention(q, k, v, factorisation="heads", block_size=4, summary_size=2)


@pytest.mark.parametrize("pattern", ["fixed", "strided"])
def test_default_block_size_is_the_power_of_two_nearest_sqrt_length(pattern):
  auto = sparse_transformer.auto_block_size
  for length, block in [(1000, 32), (1024, 32), (2000, 32), (4000, 64), (4096, 64),
                        (8192, 128), (16384, 128), (65536, 256)]:
    assert auto(length, pattern) == block, length
    assert block / 2 ** 0.5 <= length ** 0.5 <= block * 2 ** 0.5  # within a factor sqrt(2)
  # Short sequences: the fixed pattern keeps l >= c (c <= l is required), strided does not.
  assert auto(16, "fixed", summary_size=8) == 8 and auto(16, "strided") == 4
  assert registry.get("sparse_transformer").mixer.block_size == 0  # the default is auto


def test_default_block_size_is_what_the_mixer_uses():
  q, k, v = random_qkv(6, length=64)
  mask = ragged_mask(64, [50, 64])
  default = run_jitted(sparse_transformer_attention, q, k, v, mask, summary_size=2)
  for block, same in [(8, True), (16, False)]:  # auto: l = 8 at length 64
    given = run_jitted(sparse_transformer_attention, q, k, v, mask, block_size=block,
                       summary_size=2)
    assert np.allclose(default, given, atol=1e-6) == same, block


def test_default_memory_grows_like_l_sqrt_l(monkeypatch):
  # 4x the length: L*sqrt(L) is 8x, quadratic 16x. With a fixed l (LRA's 128) the L*c*L/l
  # summary term dominates at these lengths and memory grows about 15x.
  from tests.test_attention import compiled_memory  # the registry-wide memory helper
  growth = lambda: (compiled_memory("sparse_transformer", 65536)
                    / compiled_memory("sparse_transformer", 16384))
  monkeypatch.delitem(attention_cases.MEMORY_KWARGS, "sparse_transformer", raising=False)
  default = growth()
  assert default <= 9.0, f"default block size: memory grows {default:.1f}x for 4x the length"
  monkeypatch.setitem(attention_cases.MEMORY_KWARGS, "sparse_transformer", {"block_size": 128})
  fixed = growth()
  assert fixed > 12.0, f"fixed l = 128: memory grows {fixed:.1f}x (expected about 15x)"


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("pattern,factorisation,block", [
    ("fixed", "merged", 4), ("fixed", "heads", 4), ("strided", "merged", 3),
    ("strided", "heads", 3), ("fixed", "merged", 0)])
def test_decoding_step_by_step_matches_the_causal_forward(pattern, factorisation, block):
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(40, length=13, heads=4, kv_heads=2)
  mixer = registry.build_mixer("sparse_transformer", {
      "pattern": pattern, "factorisation": factorisation, "block_size": block,
      "summary_size": 2}, causal=True)
  full, stepped, cache = mixer_steps(mixer, q, k, v)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["cached_key"].shape == (2, 13, 2, 8)
