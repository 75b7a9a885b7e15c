"""Routing attention: one cluster is exact softmax attention (causal with shared QK too), a dense
numpy reference of the balanced clusters (overlaps averaged, uncovered queries zero), the EMA
update against a hand computation, centroids frozen when deterministic, padding ranked last.

Inputs are numpy; the pure function is jitted whole (op-by-op compiling dominates on CPU).
"""
import functools

import jax
import numpy as np
import pytest

from models.attention import registry
from models.attention.routing import ema_update, normalise, routing_attention
from models.attention.transformer import softmax_attention

HEADS, DIM, LENGTH = 2, 8, 16
exact_attention = jax.jit(softmax_attention, static_argnames=("causal",))
routed = jax.jit(routing_attention, static_argnames=("window_q", "window_k", "causal"))


def qkv(seed, length=LENGTH, batch=2):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((batch, length, HEADS, DIM), np.float32) for _ in range(3)]


def padding_mask(valid, length=LENGTH):
  return np.arange(length)[None, :] < np.asarray(valid)[:, None]


def centroids(clusters, seed=3):
  return np.random.default_rng(seed).standard_normal((HEADS, clusters, DIM), np.float32)


@pytest.mark.parametrize("causal", [False, True])
def test_one_cluster_is_exact_softmax_attention(causal):
  q, k, v = qkv(0)
  mask = padding_mask([11, 16])
  if causal:   # shared QK (sec. 4.1): the keys are the queries
    k = q
  out = routed(q, k, v, centroids(1), q_mask=mask, kv_mask=mask, window_q=LENGTH,
               window_k=LENGTH, causal=causal)
  expected = exact_attention(q, k, v, q_mask=mask, kv_mask=mask, causal=causal)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def dense_reference(q, k, v, mu, mask, window, causal):
  """The clusters in numpy: each takes the `window` real items of largest cosine to its
  centroid; softmax attention inside; a query's outputs averaged over its clusters."""
  b, l, h, d = q.shape
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  out = np.zeros((b, l, h, d))
  for bi in range(b):
    for hi in range(h):
      total, count = np.zeros((l, d)), np.zeros(l)
      q_hat = np.asarray(normalise(q[bi, :, hi]))
      k_hat = np.asarray(normalise(k[bi, :, hi]))
      for c in unit(mu[hi]):
        rank = lambda x: np.argsort(-np.where(mask[bi], x @ c, -np.inf), kind="stable")[:window]
        qi, ki = np.sort(rank(q_hat)), np.sort(rank(k_hat))
        logits = q[bi, qi, hi] @ k[bi, ki, hi].T / np.sqrt(d)
        allowed = mask[bi, ki][None, :] & ((ki[None, :] <= qi[:, None]) if causal else True)
        logits = np.where(allowed, logits, -np.inf)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        total[qi] += (weights / weights.sum(-1, keepdims=True)) @ v[bi, ki, hi]
        count[qi] += 1
      out[bi, :, hi] = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], 0)
  return np.where(mask[:, :, None, None], out, 0.0)


@pytest.mark.parametrize("causal", [False, True])
def test_balanced_clusters_match_a_dense_reference(causal):
  q, k, v = qkv(1)
  mask = padding_mask([11, 16])
  if causal:
    k = q
  mu = centroids(3)
  out = np.asarray(routed(q, k, v, mu, q_mask=mask, kv_mask=mask, window_q=5, window_k=5,
                          causal=causal))
  expected = dense_reference(q, k, v, mu, mask, 5, causal)
  np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
  # 3 clusters x 5 < 16 tokens: some real queries are in no cluster and get zero output.
  uncovered = np.all(expected[1] == 0.0, axis=-1)
  assert uncovered.any() and np.all(out[1][uncovered] == 0.0)


def test_padded_items_rank_after_real_ones():
  q, k, v = qkv(2)
  mask = padding_mask([11, 16])
  noisy = [np.where(mask[:, :, None, None], x, 100.0 * y) for x, y in zip((q, k, v), qkv(9))]
  run = lambda q, k, v: routed(q, k, v, centroids(2), q_mask=mask, kv_mask=mask, window_q=8,
                               window_k=8)
  np.testing.assert_array_equal(run(q, k, v), run(*noisy))


def test_ema_update_matches_a_hand_computation():
  mu = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)               # 1 head, 2 centroids
  q_hat = np.array([[[[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]]]], np.float32)
  k_hat = np.array([[[[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]]]], np.float32)
  q_valid, k_valid = np.ones((1, 3), bool), np.array([[True, False, False]])
  # Nearest by cosine: Q (1,0) and (0,-1) -> mu_0 (0 > -1), Q (.6,.8) -> mu_1, K (.8,.6) -> mu_0;
  # the padded keys count nowhere. mu_0 <- .5 (1,0) + .25 [(1,-1) + (.8,.6)] = (.95, -.1),
  # mu_1 <- .5 (0,1) + .25 (.6,.8) = (.15, .7).
  new = ema_update(mu, q_hat, q_valid, k_hat, k_valid, 0.5)
  np.testing.assert_allclose(new, [[[0.95, -0.1], [0.15, 0.7]]], atol=1e-6)


def test_centroids_move_by_the_ema_in_training_only():
  q, k, v = qkv(4)
  mask = padding_mask([11, 16])
  mixer = registry.build_mixer("routing", {"num_clusters": 3, "ema_decay": 0.9})
  variables = mixer.init(jax.random.key(0), q, k, v, q_mask=mask, kv_mask=mask)
  assert set(variables) == {"batch_stats"}   # no trained parameters: centroids are statistics
  mu = np.asarray(variables["batch_stats"]["centroids"])
  assert mu.shape == (HEADS, 3, DIM)
  run = jax.jit(functools.partial(mixer.apply, q_mask=mask, kv_mask=mask,
                                  mutable=["batch_stats"]), static_argnames="deterministic")
  _, frozen = run(variables, q, k, v, deterministic=True)
  np.testing.assert_array_equal(frozen["batch_stats"]["centroids"], mu)
  _, moved = run(variables, q, k, v, deterministic=False)
  # Hand computation of sec. 4.1's update over the real queries and keys of each head.
  unit_mu = mu / np.linalg.norm(mu, axis=-1, keepdims=True)
  expected = 0.9 * mu.astype(np.float64)
  for x in (q, k):
    x_hat = np.asarray(normalise(x))                                   # [b, l, h, d]
    nearest = np.einsum("blhd,hkd->blhk", x_hat, unit_mu).argmax(-1)
    for b, l, h in zip(*np.nonzero(mask[:, :, None] & np.ones(HEADS, bool))):
      expected[h, nearest[b, l, h]] += 0.05 * x_hat[b, l, h]
  np.testing.assert_allclose(moved["batch_stats"]["centroids"], expected, atol=1e-5)
  # The padded tokens took no part: their contents do not move the centroids.
  noisy = [np.where(mask[:, :, None, None], x, 100.0 * y) for x, y in zip((q, k, v), qkv(8))]
  _, moved_noisy = run(variables, *noisy, deterministic=False)
  np.testing.assert_allclose(moved_noisy["batch_stats"]["centroids"],
                             moved["batch_stats"]["centroids"], atol=1e-6)


def test_causal_queries_always_see_their_own_key():
  q, _, v = qkv(5, batch=1)
  mask = np.ones((1, LENGTH), bool)
  out = np.asarray(routed(q, q, v, centroids(4), q_mask=mask, kv_mask=mask, window_q=6,
                          window_k=6, causal=True))
  # Shared QK: a query taken by a cluster has its own key there, so it is never an empty row.
  q_hat = np.asarray(normalise(q))[0]
  unit_mu = centroids(4) / np.linalg.norm(centroids(4), axis=-1, keepdims=True)
  for h in range(HEADS):
    taken = np.zeros(LENGTH, bool)
    for c in unit_mu[h]:
      taken[np.argsort(-(q_hat[:, h] @ c))[:6]] = True
    assert np.all(np.abs(out[0, taken, h]).max(-1) > 0)
    assert np.all(out[0, ~taken, h] == 0.0)


def test_causal_needs_equal_lengths_and_settings_are_checked():
  q, k, v = qkv(6)
  with pytest.warns(registry.ApproximatelyCausalWarning):
    mixer = registry.build_mixer("routing", {}, causal=True)
  with pytest.raises(ValueError, match="shares queries and keys"):
    mixer.init(jax.random.key(0), q, k[:, :8], v[:, :8])
  with pytest.raises(ValueError, match="num_clusters=0"):
    registry.build_mixer("routing", {"num_clusters": 0}).init(jax.random.key(0), q, k, v)


def test_decoding_is_refused_with_the_reason():
  """No incremental decoding: building a decoder fails and says why (registry decode_caveat)."""
  from models.attention import registry as _registry
  assert not _registry.get("routing").decode
  with pytest.raises(ValueError, match="cannot decode incrementally: .*(causal|not implemented)"):
    _registry.check_decodes("routing")
