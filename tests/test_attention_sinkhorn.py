"""Sparse Sinkhorn attention: exactness limit, Sinkhorn balancing, hard sorting, causality."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention import sinkhorn as sk
from models.attention.transformer import softmax_attention

B, L, H, D = 2, 16, 2, 8
# jit: op-by-op dispatch is slow on CPU.
sinkhorn_attention = jax.jit(sk.sinkhorn_attention, static_argnames=(
    "block_size", "sinkhorn_iters", "temperature", "causal", "dropout_rate", "deterministic"))
sinkhorn = jax.jit(sk.sinkhorn, static_argnames=("iters", "temperature", "causal"))


def qkv(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  return [jax.random.normal(k, (B, L, H, D)) for k in keys]


@pytest.mark.parametrize("causal", [False, True])
def test_one_block_is_exact_attention(causal):
  q, k, v = qkv()
  mask = jnp.arange(L)[None] < jnp.array([[11], [L]])
  logits = jax.random.normal(jax.random.key(4), (B, H, 1, 1))
  out = sinkhorn_attention(q, k, v, logits, q_mask=mask, kv_mask=mask, block_size=L + 4,
                           causal=causal)
  expected = softmax_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_module_with_one_block_is_exact_attention():
  q, k, v = qkv(1)
  mixer = registry.build_mixer("sinkhorn", {"block_size": L}, max_len=L, kv_max_len=L)
  variables = mixer.init(jax.random.key(0), q, k, v)
  np.testing.assert_allclose(mixer.apply(variables, q, k, v), softmax_attention(q, k, v),
                             atol=1e-5, rtol=1e-5)


def test_sinkhorn_is_doubly_stochastic():
  logits = jax.random.normal(jax.random.key(0), (2, 3, 6, 6))
  p = np.exp(sinkhorn(logits, iters=50, temperature=0.75))
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-3)
  np.testing.assert_allclose(p.sum(-2), 1.0, atol=1e-5)  # the last step normalises columns
  few = np.exp(sinkhorn(logits, iters=1, temperature=0.75))
  assert np.abs(few.sum(-1) - 1).max() > np.abs(p.sum(-1) - 1).max()  # iterations matter


def test_causal_sinkhorn_only_draws_from_past_blocks_and_past_rows():
  logits = jax.random.normal(jax.random.key(1), (6, 6))
  p = np.exp(sinkhorn(logits, iters=5, causal=True))
  assert np.abs(np.triu(p)).max() == 0.0  # slot i uses blocks j < i only
  # Row 2 of P must not depend on the logits of later rows (causal balancing).
  grad = jax.grad(lambda x: jnp.exp(sinkhorn(x, iters=5, causal=True))[2].sum())(logits)
  assert np.abs(np.asarray(grad[3:])).max() == 0.0
  assert np.abs(np.asarray(grad[:3])).max() > 0.0


def test_hard_permutation_attends_to_local_and_sorted_block():
  # A near-hard permutation: slot i draws block perm[i]; block i then attends exactly to
  # keys of blocks i and perm[i] (one softmax over both).
  q, k, v = qkv(2)
  block, nb = 4, L // 4
  perm = np.array([2, 0, 3, 1])
  logits = jnp.broadcast_to(jnp.asarray(50.0 * np.eye(nb)[perm]), (B, H, nb, nb))
  out = sinkhorn_attention(q, k, v, logits, block_size=block, sinkhorn_iters=20,
                           temperature=0.1)
  q, k, v = (np.asarray(t).reshape(B, nb, block, H, D) for t in (q, k, v))
  keys, values = (np.concatenate([t[:, perm], t], axis=2) for t in (k, v))
  logits = np.einsum("bnqhd,bnkhd->bnhqk", q, keys) / np.sqrt(D)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  expected = np.einsum("bnhqk,bnkhd->bnqhd", weights, values).reshape(B, L, H, D)
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_sorting_changes_the_output():
  q, k, v = qkv(3)
  logits = jax.random.normal(jax.random.key(5), (B, H, 4, 4))
  a = sinkhorn_attention(q, k, v, logits, block_size=4)
  b = sinkhorn_attention(q, k, v, 5.0 * logits, block_size=4)
  assert np.abs(np.asarray(a - b)).max() > 1e-3


def test_gumbel_noise_only_at_training_time():
  q, k, v = qkv(4)
  mixer = registry.build_mixer("sinkhorn", {"block_size": 4, "gumbel_noise": True},
                               max_len=L, kv_max_len=L)
  variables = mixer.init(jax.random.key(0), q, k, v)
  apply = jax.jit(lambda rng, det: mixer.apply(variables, q, k, v, deterministic=det,
                                                rngs={"dropout": rng}), static_argnums=1)
  run = lambda seed, det: apply(jax.random.key(seed), det)
  np.testing.assert_array_equal(run(1, True), run(2, True))
  assert np.abs(np.asarray(run(1, False) - run(2, False))).max() > 1e-4


def test_bad_settings_are_clear_errors():
  q, k, v = qkv()
  mixer = registry.build_mixer("sinkhorn", {"block_size": 4}, max_len=8, kv_max_len=8)
  with pytest.raises(ValueError, match="exceeds max_len 8"):
    mixer.init(jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="temperature > 0"):
    registry.build_mixer("sinkhorn", {"temperature": 0.0}, max_len=L).init(
        jax.random.key(0), q, k, v)
  with pytest.raises(ValueError, match="cross attention"):
    registry.build_mixer("sinkhorn", {}, cross=True, max_len=L)


# Incremental decoding (models/attention/decoding.py): token by token == the causal forward.

@pytest.mark.parametrize("block_size,max_len", [(3, 11), (4, 16)])
def test_decoding_step_by_step_matches_the_causal_forward(block_size, max_len):
  """L = 11: a partial last block; max_len 16 > L: the SortNet's leading columns."""
  from tests.decode_steps import mixer_steps, random_qkv_heads
  q, k, v = random_qkv_heads(70, length=11, heads=4, kv_heads=2)
  mixer = registry.build_mixer("sinkhorn", {"block_size": block_size}, causal=True,
                               max_len=max_len, kv_max_len=max_len)
  params = mixer.init(jax.random.key(0), q, q, q)["params"]
  noise = iter(jax.random.split(jax.random.key(1), 8))  # non-zero biases: a real sort
  params = jax.tree_util.tree_map(lambda p: p + 0.5 * jax.random.normal(next(noise), p.shape),
                                  params)
  full, stepped, cache = mixer_steps(mixer, q, k, v, params=params)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert cache["cached_key"].shape == (2, 11, 2, 8)
