"""Reformer LSH attention: exactness limit, hashing and sorting, multi-round combination,
which rotations each layer and step hashes with, and the approximately causal flag."""
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention import reformer
from models.attention.reformer import SELF_LOGIT, lsh_buckets, sort_by_bucket, unit_length

B, L, H, D = 2, 16, 2, 8
# jit: op-by-op dispatch of the sort/gather pipeline is slow on CPU.
lsh_attention = jax.jit(reformer.lsh_attention, static_argnames=(
    "n_buckets", "n_hashes", "chunk_len", "causal", "dropout_rate", "deterministic"))
key = jax.random.key


def inputs(seed=0):
  kq, kv = jax.random.split(jax.random.key(seed))
  return jax.random.normal(kq, (B, L, H, D)), jax.random.normal(kv, (B, L, H, D))


def dense_shared_qk(q, v, mask, causal, window=None):
  """Reference built densely here only: shared-QK softmax attention with the self-mask,
  optionally restricted to a bool `window` `[b, h, l, l]`."""
  k = q / np.linalg.norm(q, axis=-1, keepdims=True)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(D)
  allowed = np.broadcast_to(mask[:, None, None, :], logits.shape)
  if window is not None:
    allowed = allowed & window
  if causal:
    allowed = allowed & np.tril(np.ones((L, L), bool))
  logits = np.where(allowed, logits, -1e30)
  logits = np.where(np.eye(L, dtype=bool), SELF_LOGIT, logits)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", weights, v) * mask[:, :, None, None]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_hashes", [1, 3])
def test_one_bucket_one_chunk_is_exact_shared_qk_attention(causal, n_hashes):
  q, v = inputs()
  mask = jnp.arange(L)[None] < jnp.array([[11], [L]])
  out = lsh_attention(q, v, q_mask=mask, kv_mask=mask, n_buckets=1, n_hashes=n_hashes,
                      chunk_len=L + 3, causal=causal)
  expected = dense_shared_qk(np.asarray(q), np.asarray(v), np.asarray(mask), causal)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_rounds_give_exact_attention_over_the_union_of_windows(causal):
  # Sec. 2: with the -log N_ij correction and logsumexp round weights, multi-round LSH
  # attention is softmax attention over the keys any round put in the query's window.
  q, v = inputs(4)
  mask = jnp.arange(L)[None] < jnp.array([[13], [L]])
  n_buckets, n_hashes, chunk = 4, 3, 4
  out = lsh_attention(q, v, q_mask=mask, kv_mask=mask, n_buckets=n_buckets,
                      n_hashes=n_hashes, chunk_len=chunk, hash_rng=key(1), causal=causal)
  buckets = lsh_buckets(unit_length(q.transpose(0, 2, 1, 3)), n_buckets=n_buckets,
                        n_hashes=n_hashes, rng=key(1))
  order = np.asarray(sort_by_bucket(buckets, mask, n_buckets))
  chunk_of = np.argsort(order, axis=-1) // chunk                      # [b, h, r, l]
  gap = chunk_of[..., :, None] - chunk_of[..., None, :]                # query minus key chunk
  window = ((gap == 0) | (gap == 1)).any(axis=2)                        # [b, h, l, l]
  assert not window.all()  # the windows really are sparse here
  expected = dense_shared_qk(np.asarray(q), np.asarray(v), np.asarray(mask), causal, window)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_token_attends_to_itself_only_when_alone():
  q, v = inputs()
  out = lsh_attention(q, v, n_buckets=1, chunk_len=L, causal=True)
  # Position 0 of a causal sequence has no other target: its output is its own value.
  np.testing.assert_allclose(out[:, 0], v[:, 0], atol=1e-6)
  # Position 1 has one: the self logit (-1e5) gives itself (numerically) no weight.
  np.testing.assert_allclose(out[:, 1], v[:, 0], atol=1e-6)


def test_hashing_is_deterministic_for_a_key_and_angular():
  x = unit_length(inputs()[0].transpose(0, 2, 1, 3))
  one = lsh_buckets(x, n_buckets=8, n_hashes=2, rng=key(3))
  assert one.shape == (B, H, 2, L) and int(one.min()) >= 0 and int(one.max()) < 8
  np.testing.assert_array_equal(one, lsh_buckets(x, n_buckets=8, n_hashes=2, rng=key(3)))
  assert not np.array_equal(one, lsh_buckets(x, n_buckets=8, n_hashes=2, rng=key(4)))
  # Angular: the bucket ignores the length of x, and -x lands n_buckets/2 away.
  np.testing.assert_array_equal(one, lsh_buckets(5.0 * x, n_buckets=8, n_hashes=2, rng=key(3)))
  np.testing.assert_array_equal((one + 4) % 8,
                                lsh_buckets(-x, n_buckets=8, n_hashes=2, rng=key(3)))


def test_sorting_makes_buckets_contiguous_and_padding_last():
  x = unit_length(inputs(1)[0].transpose(0, 2, 1, 3))
  buckets = lsh_buckets(x, n_buckets=4, n_hashes=2, rng=key(0))
  valid = jnp.arange(L)[None] < jnp.array([[12], [L]])
  order = np.asarray(sort_by_bucket(buckets, valid, 4))
  sorted_buckets = np.take_along_axis(np.asarray(buckets), order, axis=-1)
  sorted_buckets = np.where(np.take_along_axis(
      np.broadcast_to(np.asarray(valid)[:, None, None], order.shape), order, -1),
      sorted_buckets, 4)
  assert (np.diff(sorted_buckets, axis=-1) >= 0).all()  # same bucket => adjacent
  same = np.diff(sorted_buckets, axis=-1) == 0
  assert (np.diff(order, axis=-1)[same] > 0).all()  # by position within a bucket
  assert (order[0, :, :, 12:] >= 12).all()  # padded tokens come after every real one
  assert sorted(order[1, 0, 0]) == list(range(L))  # a permutation


def test_rounds_are_combined_by_logsumexp_weights():
  # One bucket, every round identical: the combination must return the single-round output.
  q, v = inputs(2)
  one = lsh_attention(q, v, n_buckets=1, n_hashes=1, chunk_len=4)
  four = lsh_attention(q, v, n_buckets=1, n_hashes=4, chunk_len=4)
  np.testing.assert_allclose(one, four, atol=1e-6)


def test_chunks_limit_what_a_token_sees():
  # One bucket sorts by position: with chunk_len 4 a token sees its chunk and the previous
  # one only, so a value 8+ positions later cannot affect position 0.
  q, v = inputs(3)
  f = lambda v: lsh_attention(q, v, n_buckets=1, chunk_len=4)[0, 0].sum()
  grad = jax.grad(f)(v)
  assert np.abs(np.asarray(grad[0, 4:])).max() == 0.0
  assert np.abs(np.asarray(grad[0, 1:4])).max() > 0.0


def test_bad_settings_are_clear_errors():
  q, v = inputs()
  with pytest.raises(ValueError, match="n_buckets=3 must be even"):
    reformer.lsh_attention(q, v, n_buckets=3)
  mixer = registry.build_mixer("reformer", {"chunk_len": 0})
  with pytest.raises(ValueError, match="chunk_len=0 must be >= 1"):
    mixer.init(jax.random.key(0), q, q, v)
  with pytest.raises(ValueError, match="cross attention"):
    registry.build_mixer("reformer", {}, cross=True)


SETTINGS = {"n_buckets": 4, "n_hashes": 2, "chunk_len": 4}


class TwoLayers(nn.Module):
  """Two Reformer mixers, as two layers of a model: the keys their rotations are drawn from."""
  redraw: bool = True

  @nn.compact
  def __call__(self, deterministic):
    layers = [reformer.ReformerAttention(**SETTINGS, redraw=self.redraw, name=f"layer_{i}")
              for i in range(2)]
    return [jax.random.key_data(layer.hash_rng(deterministic)) for layer in layers]


def hash_keys(deterministic, rng=None, redraw=True):
  rngs = {} if rng is None else {"dropout": key(rng)}
  return [np.asarray(k) for k in TwoLayers(redraw).apply({}, deterministic, rngs=rngs)]


def test_layers_hash_with_different_rotations():
  for deterministic, rng in [(True, None), (False, 1)]:
    first, second = hash_keys(deterministic, rng)
    assert not np.array_equal(first, second), f"deterministic={deterministic}"


def test_each_training_step_redraws_the_rotations_from_its_rng():
  step_1, step_2 = hash_keys(False, rng=1), hash_keys(False, rng=2)
  assert not np.array_equal(step_1[0], step_2[0])
  # The same step's rng (train.py derives it as fold_in(seed, step)) repeats exactly, so a
  # resumed run hashes as the uninterrupted one did.
  np.testing.assert_array_equal(step_1, hash_keys(False, rng=1))


def test_deterministic_calls_use_fixed_rotations():
  fixed = hash_keys(True)
  np.testing.assert_array_equal(fixed, hash_keys(True, rng=5))
  assert not np.array_equal(fixed[0], hash_keys(False, rng=5)[0])  # training redraws
  # redraw=False: training hashes with the same fixed per-layer rotations as evaluation.
  for rng in (1, 2):
    np.testing.assert_array_equal(fixed, hash_keys(False, rng=rng, redraw=False))


def test_the_mixer_hashes_with_its_step_rotations():
  q, v = inputs()
  mixer = reformer.ReformerAttention(**SETTINGS)
  rngs = lambda seed: {"dropout": key(seed)}
  out = jax.jit(lambda q, v: mixer.apply({}, q, q, v, deterministic=False, rngs=rngs(1)))(q, v)
  for seed, same in [(1, True), (2, False)]:
    rotations_key = mixer.apply({}, False, method="hash_rng", rngs=rngs(seed))
    want = lsh_attention(q, v, hash_rng=rotations_key, **SETTINGS)
    assert np.allclose(out, want, atol=1e-6) == same, seed


def test_causal_reformer_is_flagged_approximately_causal_and_warns():
  spec = registry.get("reformer")
  assert not spec.causal_exact and "future" in spec.causal_caveat
  with pytest.warns(registry.ApproximatelyCausalWarning, match="'reformer' is only approx"):
    registry.build_mixer("reformer", {}, causal=True)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    registry.build_mixer("reformer", {}, causal=False)  # bidirectional: nothing to warn


def test_decoding_is_refused_with_the_reason():
  """No incremental decoding: building a decoder fails and says why (registry decode_caveat)."""
  from models.attention import registry as _registry
  assert not _registry.get("reformer").decode
  with pytest.raises(ValueError, match="cannot decode incrementally: .*(causal|not implemented)"):
    _registry.check_decodes("reformer")
