"""Exact softmax attention (Vaswani et al. 2017, eq. 1): softmax(Q K^T / sqrt(d)) V.

The reference every X-former is compared with. `implementation` chooses how it is computed:
"dense" materialises the `[L, L]` weights (quadratic memory); "blocked" is the same maths in
linear memory (online softmax, `blocked_softmax.py`); "xla" calls
`jax.nn.dot_product_attention`, which uses a fused kernel (cuDNN flash attention) on GPUs where
JAX offers one (no attention dropout there); "auto" (the default) picks the fastest of these
for the backend and length at trace time (`choose_implementation`).

`float32_softmax` (default True): with bfloat16 q/k/v, the logits, the softmax and the weighted
sum's accumulation are float32 and the result is cast back to q's dtype (dense and blocked;
False computes them in the inputs' dtype). The fused kernel ("xla") computes its logits and
softmax in float32 whatever this setting (cuDNN's kernel, and JAX's XLA fallback:
`_dot_product_attention_core` promotes the logits to float32).

`score_bias` (call argument, from the base's ALiBi / T5 options): `fn(q_pos, k_pos) -> [h, lq,
lk]` added to the scaled logits before the masks. Dense evaluates it once over all positions;
blocked once per (query block, key block) pair inside its scans, forward and backward (the
backward pass also returns the bias function's parameter gradients, e.g. T5's table); "xla"
passes the full `[1, h, lq, lk]` bias to `jax.nn.dot_product_attention` (quadratic memory).

Incremental decoding (`decode=True`, registry kind "kv"; models/attention/decoding.py): a cache
of every past key and value `[b, L, kv_heads, d]` (input dtype); each step is one dense row of
eq. 1 over positions <= the token's, whatever `implementation` (the same maths), with the
score bias at (index, 0..L-1) and the float32 softmax as `float32_softmax`. MQA/GQA query
heads are grouped over the cached kv heads (`kv_cache.attend_one`), the cache not repeated.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.attention import decoding, kv_cache, masks, positions
from models.attention.blocked_softmax import blocked_softmax_attention
from models.attention.registry import register

IMPLEMENTATIONS = ("auto", "dense", "blocked", "xla")

# "auto" on CPU (and any non-GPU backend): "dense" below this length, "blocked" at or above it.
# The crossover measured on this project's 2-core CPU (one encoder block, emb 256, 4 heads,
# MLP 1024, batch 2, train step forward + backward + Adam; docs/auto_attention_cpu.json, written
# by benchmarks/auto_attention.py, "measured_crossover"): from 4096 on blocked is faster by
# more than the script's 10% margin in every run (dense / blocked 1.4-1.55 at 4096, 1.9-2.2 at
# 8192); from 256 to 2048 the two are tied, their order flipping between runs (0.88-1.19), and
# "auto" keeps dense there.
CPU_BLOCKED_FROM = 4096


def current_backend() -> str:
  """The platform "auto" decides for ("cpu", "gpu", "tpu", ...); a function so tests can
  stand in another."""
  return jax.default_backend()


def choose_implementation(backend: str, length: int, dropout: bool) -> str:
  """The implementation "auto" runs: "xla" (`jax.nn.dot_product_attention`, cuDNN's fused
  kernel where JAX has one) on a GPU when this call drops no attention weights; otherwise, and
  on every other backend, "dense" below `CPU_BLOCKED_FROM` keys and "blocked" at or above it.
  With attention dropout the fused kernel cannot drop weights, so a GPU takes the CPU rule.
  `length`: the longer of the query and key lengths (static shapes, so decided at trace time).
  """
  if backend == "gpu" and not dropout:
    return "xla"
  return "blocked" if length >= CPU_BLOCKED_FROM else "dense"


def softmax_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False,
                      dropout_rate=0.0, dropout_rng=None, deterministic=True,
                      float32_softmax=True, score_bias=None):
  """Pure function. q: `[b, lq, h, d]`, k/v: `[b, lk, h, d]`, masks bool `[b, l]`.

  `float32_softmax`: logits, softmax and the weighted sum accumulate in float32 (a no-op for
  float32 inputs); the output has q's dtype either way. `score_bias`: fn(q_pos, k_pos) ->
  `[h, lq, lk]` added to the scaled logits (module docstring)."""
  depth = q.shape[-1]
  compute = jnp.promote_types(q.dtype, jnp.float32) if float32_softmax else q.dtype
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=compute)
  logits = logits / jnp.sqrt(depth).astype(compute)
  if score_bias is not None:
    lq, lk = q.shape[1], k.shape[1]
    bias = score_bias(positions.query_positions(lq, lk, causal), jnp.arange(lk))
    logits = logits + bias[None].astype(compute)
  bias = masks.padding_bias(q_mask, kv_mask, logits.dtype)
  if bias is not None:
    logits = logits + bias
  if causal:
    logits = logits + masks.causal_bias(q.shape[1], k.shape[1], logits.dtype)
  weights = jax.nn.softmax(logits, axis=-1)
  if not deterministic and dropout_rate > 0.0:
    weights = masks.dropout_weights(weights, dropout_rate, dropout_rng)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v.astype(compute),
                   preferred_element_type=compute)
  return masks.zero_padded_queries(out.astype(q.dtype), q_mask)


@register("transformer", causal=True, cross=True, subquadratic=False, score_bias=True,
          decode="kv")
class SoftmaxAttention(nn.Module):
  """Full attention with padding and causal masks and attention-weight dropout."""
  causal: bool = False
  dropout_rate: float = 0.0
  implementation: str = "auto"  # "auto", "dense", "blocked" (linear memory) or "xla"
  float32_softmax: bool = True  # bfloat16 inputs: logits, softmax, weighted sum in float32
  # Block lengths of the blocked implementation (memory O(block_q * block_k) per step). One
  # key block up to 16K: on XLA's CPU, whole-row blocks beat an online softmax over shorter key
  # blocks (attention-layer train step at L=8192: 5.74 s against 6.67 s with block_k=4096;
  # docs/benchmark_block_k_8192.json).
  block_q: int = 256
  block_k: int = 16384

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               score_bias=None, decode=False):
    if self.implementation not in IMPLEMENTATIONS:
      raise ValueError(f"transformer attention_kwargs.implementation={self.implementation!r}; "
                       f"expected one of {IMPLEMENTATIONS}")
    if decode:
      stepping, index = decoding.decode_index(self)
      keys, values = kv_cache.full_cache(self, k, v, stepping, index)
      if stepping:
        return self._decode(q, keys, values, index, score_bias)
      # the call that creates the cache: the ordinary causal forward (k/v have the kv heads)
      k, v = decoding.repeat_kv(k, q.shape[2]), decoding.repeat_kv(v, q.shape[2])
    rng = None
    if not deterministic and self.dropout_rate > 0.0:
      rng = self.make_rng("dropout")
    implementation = self.implementation
    if implementation == "auto":
      implementation = choose_implementation(current_backend(),
                                             max(q.shape[1], k.shape[1]), rng is not None)
      if implementation == "xla" and self.causal and q.shape[1] != k.shape[1]:
        # xla_attention's causal mask needs equal lengths: the CPU rule instead
        implementation = choose_implementation("cpu", max(q.shape[1], k.shape[1]), False)
    common = dict(q_mask=q_mask, kv_mask=kv_mask, causal=self.causal,
                  dropout_rate=self.dropout_rate, dropout_rng=rng, deterministic=deterministic,
                  float32_softmax=self.float32_softmax, score_bias=score_bias)
    if implementation == "dense":
      return softmax_attention(q, k, v, **common)
    if implementation == "blocked":
      return blocked_softmax_attention(q, k, v, block_q=self.block_q, block_k=self.block_k,
                                       **common)
    if rng is not None:
      raise ValueError("attention_kwargs.implementation='xla' has no attention dropout; set "
                       "config.model.attention_dropout_rate=0 or use 'dense'/'blocked'/'auto'")
    return xla_attention(q, k, v, q_mask, kv_mask, self.causal, score_bias)

  def _decode(self, q, keys, values, index, score_bias):
    """One token at position `index`: eq. 1's row over the cached keys at positions <= index."""
    decoding.check_one_token(q, "transformer")
    length = keys.shape[1]
    k_pos = jnp.arange(length)
    bias = None
    if score_bias is not None:  # [h, 1, L] -> [1, h, L]
      bias = score_bias(index[None], k_pos)[:, 0][None]
    return kv_cache.attend_one(q, keys, values, (k_pos <= index)[None, None], bias=bias,
                               float32_softmax=self.float32_softmax)


def xla_attention(q, k, v, q_mask, kv_mask, causal, score_bias=None):
  """`jax.nn.dot_product_attention` (fused cuDNN kernel on GPUs that have one; its logits and
  softmax are float32 for bfloat16 inputs). `score_bias` is evaluated over all positions and
  passed as its `bias` `[1, h, lq, lk]`, in q's dtype."""
  mask = None
  if kv_mask is not None:
    mask = kv_mask[:, None, None, :]
    if q_mask is not None:
      mask = mask & q_mask[:, None, :, None]
  if causal and q.shape[1] != k.shape[1]:
    raise ValueError("implementation='xla' needs equal query and key lengths when causal")
  bias = None
  if score_bias is not None:
    lq, lk = q.shape[1], k.shape[1]
    bias = score_bias(positions.query_positions(lq, lk, causal), jnp.arange(lk))
    bias = bias[None].astype(q.dtype)
  out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, is_causal=causal)
  return masks.zero_padded_queries(out, q_mask)
