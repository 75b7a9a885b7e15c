"""Routing Transformer attention (Roy, Saffar, Vaswani and Grangier 2021, "Efficient
Content-Based Sparse Attention with Routing Transformers", TACL; sec. 4 "Routing attention").

- Routing (sec. 4): queries and keys are normalised (layer norm without scale or bias, as the
  authors' code `clustered_local_attention_helper` does) and projected onto the unit sphere,
  where the nearest centroid by Euclidean distance is the one of largest cosine. Each layer
  has `num_clusters` centroids per head, SHARED by queries and keys (the authors' code creates
  one `means` variable [heads, clusters, depth] that routes both).
- Balanced assignment (the authors' `gather_cluster_attention_items`): each cluster takes the
  `window` queries and, separately, the `window` keys nearest its centroid (top-k), default
  window = ceil(L / num_clusters); taken items are kept in position order. Attention is
  softmax(q k^T / sqrt(d)) within each cluster (window x window scores), outputs are scattered
  back to their positions. A query taken by several clusters gets the mean of their outputs
  (the authors' code divides by the count + 1e-2; here by the count exactly); a query taken by
  none gets zero output (the residual carries it).
- Centroids (sec. 4, online k-means): exponential moving average, during training only
  (`deterministic=False`), with no gradient:
      mu <- lambda mu + (1 - lambda)/2 sum_{i: mu(Q_i) = mu} Q_i
                      + (1 - lambda)/2 sum_{j: mu(K_j) = mu} K_j
  with lambda = `ema_decay` (the paper's 0.999); mu(x) is x's nearest centroid, the sums run over
  the batch's real (unpadded) normalised queries and keys of each head. The centroids live in the
  flax collection "batch_stats" (train.py updates it in training and passes it to evaluation, as
  for BatchNorm); a training call where the collection is not mutable leaves them as they are.
  Initialisation as the authors' code: layer-normed standard normal vectors.
- Causal form: shared QK (the authors' decoder option `share_qk`): keys are the queries (the
  `k` projection is unused), so a query and its own key land in the same clusters; within a
  cluster, key positions after the query's are masked. Only approximately causal: whether a
  past key is among a cluster's `window` nearest depends on every token, future ones included,
  so changing the future can move earlier outputs (no gradient reaches the future: the routing
  is discrete). The registry marks it `causal_exact=False`.

Deviations, and why:
- The attention scores use the base's raw q and k (scaled by 1/sqrt(d), as everywhere in this
  zoo, and as lucidrains' routing_transformer); the authors' code attends with the layer-normed
  q and k. Normalisation here serves the routing only, so that one cluster is exactly softmax
  attention (the limit the tests check).
- Centroids are compared by direction (cosine; unit-length copies), since the paper's update
  sums its members, so a centroid's norm grows with its count (the authors' code divides the
  EMA sum by an EMA count instead, VQ-VAE style). The balanced top-k ranking within a cluster
  does not depend on the centroid's norm anyway.
- No commitment loss: the authors' code (with EMA centroids) also adds beta * ||x - sg(mu(x))||^2
  (beta 1e-4) to the training loss, pulling queries and keys towards their centroids; a mixer
  here returns no auxiliary loss, so only the EMA trains the clustering.
- Padding: padded queries and keys are ranked after every real one in every cluster, so the
  contents of padded positions never change which real tokens a cluster takes; padded keys
  are masked. The window is ceil(L / num_clusters) of the padded length L (static shapes), so
  appending MORE padding (a longer L) can enlarge the window and change the clusters; the
  registry's padding test (same L, different padded contents) holds exactly.
- Complexity O(L * k * d) for the routing scores and O(k * window^2 * d) for the attention;
  with window = L/k that is O(L^2 / k), O(L^1.5) for the paper's k ~ sqrt(L). Never an [L, L]
  array.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import masks
from models.attention.registry import register


def normalise(x, eps=1e-6):
  """Layer norm without scale or bias (sec. 4), divided by sqrt(d): unit vectors. float32."""
  x = x.astype(jnp.float32)
  x = x - x.mean(-1, keepdims=True)
  x = x * jax.lax.rsqrt((x * x).mean(-1, keepdims=True) + eps)
  return x / math.sqrt(x.shape[-1])


def _unit_centroids(centroids):
  """`[h, k, d]` -> unit length (the paper's k-means on the unit sphere)."""
  return centroids * jax.lax.rsqrt(jnp.sum(centroids * centroids, -1, keepdims=True) + 1e-30)


def cluster_members(x_hat, valid, centroids, window: int):
  """Balanced routing: the `window` items nearest each centroid, in position order.

  x_hat `[b, h, l, d]` unit vectors, valid bool `[b, l]`, centroids `[h, k, d]` ->
  int `[b, h, k, window]`. Padded items rank after every real one."""
  scores = jnp.einsum("bhld,hkd->bhkl", x_hat, _unit_centroids(centroids))
  scores = jnp.where(valid[:, None, None, :], scores, -jnp.inf)
  _, members = jax.lax.top_k(scores, window)
  return jnp.sort(members, axis=-1)   # position order (the authors' code sorts too)


def member_sums(x_hat, valid, centroids):
  """sum_{i: mu(x_i) = mu} x_i per head and centroid `[h, k, d]`: x_hat `[b, h, l, d]` unit
  vectors, each in its nearest centroid's sum; padded items (valid False) in none."""
  nearest = jnp.argmax(jnp.einsum("bhld,hkd->bhlk", x_hat, _unit_centroids(centroids)), -1)
  member = jax.nn.one_hot(nearest, centroids.shape[1]) * valid[:, None, :, None]
  return jnp.einsum("bhlk,bhld->hkd", member, x_hat)


def ema_update(centroids, q_hat, q_valid, k_hat, k_valid, decay: float):
  """The paper's online k-means step (sec. 4), no gradient: centroids `[h, k, d]`,
  mu <- lambda mu + (1 - lambda)/2 sum_{mu(Q_i) = mu} Q_i + (1 - lambda)/2 sum_{mu(K_j) = mu} K_j.
  """
  sums = member_sums(q_hat, q_valid, centroids) + member_sums(k_hat, k_valid, centroids)
  return jax.lax.stop_gradient(decay * centroids + (1.0 - decay) / 2.0 * sums)


def _gather(x, index):
  """x `[b, h, l, ...]`, index `[b, h, k, w]` -> `[b, h, k, w, ...]`."""
  return jax.vmap(jax.vmap(lambda x, i: x[i]))(x, index)


def _scatter_mean(values, index, length: int):
  """values `[b, h, k, w, d]` at positions index `[b, h, k, w]` -> `[b, h, l, d]`, the mean over
  the clusters that took a position (zero where none did)."""
  b, h, k, w, d = values.shape
  flat_values, flat_index = values.reshape(b, h, k * w, d), index.reshape(b, h, k * w)
  segment_sum = lambda x, i: jax.ops.segment_sum(x, i, num_segments=length)
  total = jax.vmap(jax.vmap(segment_sum))(flat_values, flat_index)
  count = jax.vmap(jax.vmap(segment_sum))(jnp.ones((b, h, k * w), values.dtype), flat_index)
  return total / jnp.maximum(count, 1.0)[..., None]


def routing_attention(q, k, v, centroids, *, q_mask=None, kv_mask=None, window_q: int,
                      window_k: int, causal=False, dropout_rate=0.0, dropout_rng=None,
                      deterministic=True, q_hat=None, k_hat=None):
  """Pure function. q `[b, lq, h, d]`, k/v `[b, lk, h, d]`, centroids `[h, clusters, d]`,
  masks bool `[b, l]`. Causal: pass k = q (shared QK). `q_hat`/`k_hat` (`[b, h, l, d]`): the
  normalised routing vectors when the caller has them already."""
  batch, lq, heads, depth = q.shape
  lk = k.shape[1]
  q_valid = jnp.ones((batch, lq), bool) if q_mask is None else q_mask.astype(bool)
  k_valid = jnp.ones((batch, lk), bool) if kv_mask is None else kv_mask.astype(bool)
  qh, kh, vh = (x.transpose(0, 2, 1, 3) for x in (q, k, v))        # [b, h, l, d]
  q_hat = normalise(qh) if q_hat is None else q_hat
  k_hat = normalise(kh) if k_hat is None else k_hat
  centroids = jax.lax.stop_gradient(centroids.astype(jnp.float32))
  q_idx = cluster_members(jax.lax.stop_gradient(q_hat), q_valid, centroids, window_q)
  k_idx = cluster_members(jax.lax.stop_gradient(k_hat), k_valid, centroids, window_k)

  qc, kc, vc = _gather(qh, q_idx), _gather(kh, k_idx), _gather(vh, k_idx)  # [b, h, k, w, d]
  logits = jnp.einsum("bhcqd,bhckd->bhcqk", qc, kc, preferred_element_type=jnp.float32)
  logits = logits / math.sqrt(depth)
  allowed = _gather(jnp.broadcast_to(k_valid[:, None], (batch, heads, lk)), k_idx)[..., None, :]
  if causal:   # positions carried through the routing (sec. 4, causal masking)
    allowed = allowed & (k_idx[..., None, :] <= q_idx[..., :, None])
  logits = jnp.where(allowed, logits, masks.big_negative(jnp.float32))
  weights = jnp.where(allowed, jax.nn.softmax(logits, axis=-1), 0.0)   # no key: zero output
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  out = jnp.einsum("bhcqk,bhckd->bhcqd", weights, vc.astype(jnp.float32))
  out = _scatter_mean(out, q_idx, lq).transpose(0, 2, 1, 3)          # [b, lq, h, d]
  return masks.zero_padded_queries(out.astype(q.dtype), q_mask)


def _window(length: int, num_clusters: int, window: int) -> int:
  return min(length, window if window > 0 else -(-length // num_clusters))


@register("routing", causal=True, cross=True, causal_exact=False,
          causal_caveat="each cluster takes the `window` tokens nearest its centroid among all "
          "tokens, future ones included, so changing the future can move which past keys a "
          "query sees (Roy et al. 2021, sec. 4)", batch_stats=True,
          decode_caveat="its causal form is only approximately causal (each cluster's members "
          "are the `window` tokens nearest its centroid among all tokens, future ones "
          "included), so no token-by-token computation reproduces it (Roy et al. 2021, sec. 4)")
class RoutingAttention(nn.Module):
  """Online k-means routing attention; centroids in the "batch_stats" collection."""
  num_clusters: int = 32   # k; the paper takes k ~ sqrt(L) (sec. 4): the configs set it per task
  window: int = 0          # items per cluster; 0: ceil(L / num_clusters) (balanced)
  ema_decay: float = 0.999  # lambda of sec. 4
  causal: bool = False
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None):
    if self.num_clusters < 1 or self.window < 0:
      raise ValueError(f"routing attention_kwargs: num_clusters={self.num_clusters} must be "
                       f">= 1 and window={self.window} >= 0")
    if not 0.0 <= self.ema_decay <= 1.0:
      raise ValueError(f"routing attention_kwargs.ema_decay={self.ema_decay} must be in [0, 1]")
    heads, depth = q.shape[2], q.shape[3]
    if self.causal:
      if q.shape[1] != k.shape[1]:
        raise ValueError("causal routing attention shares queries and keys: query length "
                         f"{q.shape[1]} != key length {k.shape[1]}")
      k, kv_mask = q, q_mask if kv_mask is None else kv_mask   # shared QK (sec. 4)

    def init_centroids():   # the authors' code: layer-normed standard normal
      draw = jax.random.normal(self.make_rng("params"), (heads, self.num_clusters, depth))
      return normalise(draw) * math.sqrt(depth)
    centroids = self.variable("batch_stats", "centroids", init_centroids)

    q_hat = normalise(q.transpose(0, 2, 1, 3))
    k_hat = q_hat if self.causal else normalise(k.transpose(0, 2, 1, 3))
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    out = routing_attention(
        q, k, v, centroids.value, q_mask=q_mask, kv_mask=kv_mask,
        window_q=_window(q.shape[1], self.num_clusters, self.window),
        window_k=_window(k.shape[1], self.num_clusters, self.window), causal=self.causal,
        dropout_rate=self.dropout_rate, dropout_rng=rng, deterministic=deterministic,
        q_hat=q_hat, k_hat=k_hat)
    if (not deterministic and not self.is_initializing()
        and self.is_mutable_collection("batch_stats")):
      q_valid = jnp.ones(q.shape[:2], bool) if q_mask is None else q_mask.astype(bool)
      k_valid = jnp.ones(k.shape[:2], bool) if kv_mask is None else kv_mask.astype(bool)
      # shared QK (causal): the keys are the queries, each sum is over the same members
      centroids.value = ema_update(centroids.value, q_hat, q_valid, k_hat, k_valid,
                                   self.ema_decay)
    return out
