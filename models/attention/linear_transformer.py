"""Linear Transformer (Katharopoulos et al. 2020, "Transformers are RNNs").

Softmax similarity replaced by the kernel phi(q)^T phi(k) with phi(x) = elu(x) + 1 (eq. 7),
so attention is phi(Q) (phi(K)^T V) normalised by phi(Q) phi(K)^T 1 (eq. 6): O(L) time and
memory. The causal form is the RNN view (eqs. 16-20): a running state S_i = sum_{j<=i}
phi(k_j) v_j^T and z_i = sum_{j<=i} phi(k_j), computed chunk-wise in
`feature_maps.causal_linear_attention`. No attention weights exist, so there is no
attention-weight dropout (as in the paper and the LRA repository).

Incremental decoding (decode="state"): the same RNN, one token at a time (eqs. 18-20), with
S and z in the "cache" collection (`feature_maps.LinearState`): float32, `[b, kv_heads, d, d]`
and `[b, kv_heads, d]` whatever the number of tokens decoded.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax

from models.attention import decoding, feature_maps
from models.attention.registry import register


def elu_feature_map(x):
  """phi(x) = elu(x) + 1 (eq. 7): positive, so the normaliser never vanishes."""
  return jax.nn.elu(x) + 1.0


# Jitted as a whole: one compile instead of one per op when called eagerly (tests, benchmarks).
@functools.partial(jax.jit, static_argnames=("causal", "eps", "chunk_size"))
def linear_transformer_attention(q, k, v, *, q_mask=None, kv_mask=None, causal=False,
                                 eps=1e-6, chunk_size=128):
  """Pure function. q: `[b, lq, h, d]`, k/v: `[b, lk, h, d]`, masks bool `[b, l]`."""
  # Padded keys contribute nothing: phi(k) = 0 there, so neither k nor v needs zeroing (a
  # padded v only ever meets a zero feature); padded queries' outputs are zeroed at the end.
  phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
  return feature_maps.padded_linear_attention(phi_q, phi_k, v, q_mask=q_mask, kv_mask=kv_mask,
                                              causal=causal, eps=eps, chunk_size=chunk_size)


@register("linear_transformer", causal=True, cross=True, decode="state")
class LinearTransformerAttention(nn.Module):
  """elu+1 linear attention; `chunk_size` only changes speed of the causal form, not results."""
  causal: bool = False
  eps: float = 1e-6          # added to the normaliser, as in the authors' code
  chunk_size: int = 128

  @nn.compact
  def __call__(self, q, k, v, *, q_mask=None, kv_mask=None, deterministic=True, inputs_q=None,
               decode=False):
    if self.chunk_size < 1:
      raise ValueError(f"linear_transformer chunk_size={self.chunk_size}; expected >= 1")
    if decode:
      return self._decode(q, k, v)
    return linear_transformer_attention(q, k, v, q_mask=q_mask, kv_mask=kv_mask,
                                        causal=self.causal, eps=self.eps,
                                        chunk_size=self.chunk_size)

  def _decode(self, q, k, v):
    """Incremental decoding (decoding.py); k/v have the base's key/value heads."""
    if not self.causal:
      raise ValueError("linear_transformer decode=True needs the causal form")
    stepping, _ = decoding.decode_index(self)
    b, _, kv_heads, dim = k.shape
    state = feature_maps.LinearState(self, b, kv_heads, dim, v.shape[-1])
    if not stepping:   # the cache-creating call: the causal full forward
      heads = q.shape[2]
      return linear_transformer_attention(q, decoding.repeat_kv(k, heads),
                                          decoding.repeat_kv(v, heads), causal=True,
                                          eps=self.eps, chunk_size=self.chunk_size)
    decoding.check_one_token(q, "attention 'linear_transformer'")
    return state.step(elu_feature_map(q), elu_feature_map(k), v, eps=self.eps)
