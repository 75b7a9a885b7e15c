"""Transformer-XL (models/transformer_xl.py): relative shift and attention against naive
references, the segment-level recurrence (full memory == one long segment), causality across
segments and the stop_gradient on the memory."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import generate
from models.decoder import DecoderLM
from models.transformer_xl import (RelativeAttention, XLBlock, XLDecoder, XLDecoderStack,
                                   relative_shift, segment_recurrent, sinusoid)

B, E, HEADS, QKV, MLP, LAYERS = 2, 16, 2, 16, 32, 2


def stack(memory_length, **kw):
  return XLDecoderStack(LAYERS, HEADS, QKV, MLP, memory_length=memory_length, **kw)


def inputs(length, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (B, length, E))


def perturb(x, positions):
  """x with random noise at `positions` (not a constant shift: LayerNorm removes those)."""
  return x.at[:, positions].add(jax.random.normal(jax.random.PRNGKey(7), x[:, positions].shape))


def init(model, length):
  return model.init(jax.random.PRNGKey(1), inputs(length))


def run(model, variables, x, segment_length, memory_length, deterministic=True, rngs=None):
  fn = lambda m, x: segment_recurrent(m, x, segment_length, memory_length, deterministic)
  return nn.apply(fn, model)(variables, x, rngs=rngs)


@pytest.mark.parametrize("length,klen", [(4, 4), (4, 9), (5, 12)])
def test_relative_shift_realigns_each_row(length, klen):
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 3, length, klen)))
  shifted = np.asarray(relative_shift(jnp.asarray(x)))
  mlen = klen - length
  for i in range(length):
    for j in range(mlen + i + 1):  # the keys query i sees
      np.testing.assert_array_equal(shifted[..., i, j], x[..., i, j + length - 1 - i])


def naive_relative_attention(params, x, memory):
  """A^rel of Dai et al. 2019 sec. 3.3, term by term, with an explicit [L, K, d] tensor of
  W_{k,R} R_{i-j} (i the query's absolute position), causal softmax, output projection."""
  x, memory = np.asarray(x, np.float64), np.asarray(memory, np.float64)
  cat = np.concatenate([memory, x], axis=1)
  length, klen, mlen = x.shape[1], cat.shape[1], memory.shape[1]
  p = {k: np.asarray(v["kernel"] if isinstance(v, dict) else v, np.float64)
       for k, v in params.items()}
  q = np.einsum("ble,ehd->blhd", x, p["query"])
  k = np.einsum("ble,ehd->blhd", cat, p["key"])
  v = np.einsum("ble,ehd->blhd", cat, p["value"])
  u, vb = p["content_bias"], p["position_bias"]
  distance = (mlen + np.arange(length))[:, None] - np.arange(klen)[None, :]  # [L, K]
  r = np.asarray(sinusoid(jnp.asarray(np.maximum(distance, 0).reshape(-1)), x.shape[-1]),
                 np.float64).reshape(length, klen, -1)
  wr = np.einsum("qke,ehd->qkhd", r, p["position"])  # [L, K, h, d]
  logits = (np.einsum("bqhd,bkhd->bhqk", q, k)          # (a)
            + np.einsum("bqhd,qkhd->bhqk", q, wr)       # (b)
            + np.einsum("hd,bkhd->bhk", u, k)[:, :, None]  # (c)
            + np.einsum("hd,qkhd->hqk", vb, wr)[None])  # (d)
  logits = logits / np.sqrt(q.shape[-1])
  logits = np.where(distance >= 0, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  out = np.einsum("bhqk,bkhd->bqhd", weights, v)
  return np.einsum("bqhd,hde->bqe", out, p["out"])


@pytest.mark.parametrize("mlen", [0, 3, 8])
def test_relative_attention_matches_naive_four_terms(mlen):
  attention = RelativeAttention(HEADS, QKV)
  x, memory = inputs(5), inputs(mlen, seed=2)
  params = attention.init(jax.random.PRNGKey(1), x, memory)["params"]
  # u, v start near 0 (std 0.02): give them weight so terms (c) and (d) are tested.
  params = dict(params, content_bias=jax.random.normal(jax.random.PRNGKey(3), (HEADS, 8)),
                position_bias=jax.random.normal(jax.random.PRNGKey(4), (HEADS, 8)))
  got = attention.apply({"params": params}, x, memory if mlen else None)
  want = naive_relative_attention(params, x, memory)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length,segment,memory", [(12, 4, 8), (12, 3, 12), (6, 1, 5)])
def test_full_memory_equals_one_long_segment(length, segment, memory):
  """Sec. 3.2/3.3: with M >= L - S every query's memory holds its whole prefix at the right
  relative distances, so segment by segment == one segment of length L (no memory)."""
  x = inputs(length)
  variables = init(stack(memory), segment)  # parameters do not depend on M or S
  whole = run(stack(0), variables, x, length, 0)
  segmented = run(stack(memory), variables, x, segment, memory)
  np.testing.assert_allclose(np.asarray(segmented), np.asarray(whole), atol=1e-5, rtol=1e-5)
  if segment == 4:  # the same under jit (once: compiling is the slow part on a CPU)
    jitted = jax.jit(lambda v, x: run(stack(memory), v, x, segment, memory))(variables, x)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(whole), atol=1e-5, rtol=1e-5)


def test_short_memory_forgets_beyond_it():
  """M = S < L - S: segments 1-2 match one long segment, segment 3 has lost segment 1."""
  x, variables = inputs(12), init(stack(4), 4)
  whole = np.asarray(run(stack(0), variables, x, 12, 0))
  segmented = np.asarray(run(stack(4), variables, x, 4, 4))
  np.testing.assert_allclose(segmented[:, :8], whole[:, :8], atol=1e-5, rtol=1e-5)
  assert np.abs(segmented[:, 8:] - whole[:, 8:]).max() > 1e-3
  # Segment 1 still reaches segment 3 through layer 1's memory (block 0's outputs over
  # segment 2, computed with segment 1 in view): the context grows with depth, O(N x L)
  # (sec. 3.2). With one layer the memory is segment 2's inputs alone and segment 1 is gone.
  moved = perturb(x, slice(0, 4))
  assert np.abs(np.asarray(run(stack(4), variables, moved, 4, 4))[:, 8:]
                - segmented[:, 8:]).max() > 1e-4
  one_layer = XLDecoderStack(1, HEADS, QKV, MLP, memory_length=4)
  v1 = init(one_layer, 4)
  np.testing.assert_allclose(np.asarray(run(one_layer, v1, moved, 4, 4))[:, 8:],
                             np.asarray(run(one_layer, v1, x, 4, 4))[:, 8:], atol=1e-6)


def test_no_memory_is_plain_causal_relative_attention():
  x, variables = inputs(8), init(stack(0), 8)
  one = run(stack(0), variables, x, 8, 0)
  direct, mems = stack(0).apply(variables, x)
  np.testing.assert_allclose(np.asarray(one), np.asarray(direct), atol=1e-6)
  assert [m.shape for m in mems] == [(B, 0, E)] * LAYERS
  # M = 0 over several segments: each segment is processed alone.
  segmented = np.asarray(run(stack(0), variables, x, 4, 0))
  second, _ = stack(0).apply(variables, x[:, 4:])
  np.testing.assert_allclose(segmented[:, 4:], np.asarray(second), atol=1e-5, rtol=1e-5)
  # The stack with M = 0 is causal relative attention: its first block's attention equals the
  # four-term reference (checked above for RelativeAttention) and a future token moves nothing.
  y = np.asarray(stack(0).apply(variables, perturb(x, slice(5, None)))[0])
  np.testing.assert_allclose(y[:, :5], np.asarray(direct)[:, :5], atol=1e-6)


def test_causal_across_segments_forward_and_gradient():
  length, segment, memory = 12, 4, 8
  x, variables = inputs(length), init(stack(memory), segment)
  forward = jax.jit(lambda x: run(stack(memory), variables, x, segment, memory))
  base = np.asarray(forward(x))
  for t in (2, 3, 4, 9):  # inside segment 1, its last token, the first of segment 2, segment 3
    changed = np.asarray(forward(perturb(x, slice(t + 1, None))))
    np.testing.assert_allclose(changed[:, :t + 1], base[:, :t + 1], atol=1e-6)
    assert np.abs(changed[:, t + 1:] - base[:, t + 1:]).max() > 1e-3
  # d out[:, t] / d x[:, s] for every t at once (one vjp per output position, vmapped).
  _, vjp = jax.vjp(forward, x)
  cotangents = jnp.eye(length)[:, None, :, None] * jnp.ones((1, B, 1, E))  # [t, b, l, e]
  grads = np.abs(np.asarray(jax.vmap(lambda c: vjp(c)[0])(cotangents))).sum(axis=(1, 3))
  for t in range(length):
    start = t - t % segment
    assert np.all(grads[t, t + 1:] == 0.0), t  # no future token
    assert np.all(grads[t, start:t + 1] > 0.0), t  # its own segment's prefix, every token
    # none into earlier segments: their states reach t through SG(memory) only (sec. 3.2).
    assert np.all(grads[t, :start] == 0.0), t


def test_memory_carries_no_gradient_but_carries_information():
  length, segment, memory = 8, 4, 4
  x, variables = inputs(length), init(stack(memory), segment)
  model = stack(memory)
  base = np.asarray(run(model, variables, x, segment, memory))
  changed = np.asarray(run(model, variables, perturb(x, slice(0, 1)), segment, memory))
  assert np.abs(changed[:, 4:] - base[:, 4:]).max() > 1e-4  # segment 2 reads the memory
  _, mems = model.apply(variables, x[:, :segment])
  assert [m.shape for m in mems] == [(B, memory, E)] * LAYERS
  grad = jax.grad(lambda x: sum(m.sum() for m in model.apply(variables, x)[1]))(x[:, :segment])
  assert np.all(np.asarray(grad) == 0.0)


def test_memories_keep_the_last_m_states_of_each_layer_input():
  model = stack(6)
  variables = init(model, 4)
  x = inputs(4)
  mems = [inputs(5, seed=10 + i) for i in range(LAYERS)]
  _, new = model.apply(variables, x, mems)
  assert [m.shape for m in new] == [(B, 6, E)] * LAYERS
  np.testing.assert_array_equal(np.asarray(new[0]),
                                np.asarray(jnp.concatenate([mems[0], x], 1)[:, -6:]))
  # layer 1's memory: the output of block 0 (layer 1's input), not a LayerNorm's output.
  pos_emb = sinusoid(jnp.arange(8, -1, -1), E)  # distances K-1 ... 0, K = 5 + 4
  h0 = XLBlock(HEADS, QKV, MLP).apply({"params": variables["params"]["block_0"]}, x, mems[0],
                                      pos_emb)
  np.testing.assert_allclose(np.asarray(new[1]),
                             np.asarray(jnp.concatenate([mems[1], h0], 1)[:, -6:]), atol=1e-6)


def test_dropout_training_and_bfloat16():
  model = stack(4, dropout_rate=0.1, attention_dropout_rate=0.1)
  x, variables = inputs(8), init(stack(4), 4)
  rngs = {"dropout": jax.random.PRNGKey(5)}
  train = np.asarray(run(model, variables, x, 4, 4, deterministic=False, rngs=rngs))
  evaluation = np.asarray(run(model, variables, x, 4, 4))
  assert np.isfinite(train).all() and np.abs(train - evaluation).max() > 1e-4
  low = stack(4, dtype=jnp.bfloat16)
  y = run(low, variables, x.astype(jnp.bfloat16), 4, 4)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(y, np.float32), evaluation, atol=0.15)


def test_inside_a_parent_module_shares_parameters_across_segments():
  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      return segment_recurrent(stack(4, name="xl"), x, 4, 4)

  x = inputs(8)
  variables = Decoder().init(jax.random.PRNGKey(1), x)
  assert set(variables["params"]) == {"xl"}
  y = Decoder().apply(variables, x)
  want = run(stack(4), {"params": variables["params"]["xl"]}, x, 4, 4)
  np.testing.assert_allclose(np.asarray(y), np.asarray(want), atol=1e-6)


def test_bad_segmentation_is_a_clear_error():
  variables = init(stack(4), 4)
  with pytest.raises(ValueError, match="xl_segment_length=3 must be positive and divide"):
    run(stack(4), variables, inputs(8), 3, 4)
  with pytest.raises(ValueError, match="memory_length=2 differs"):
    run(stack(4), variables, inputs(8), 4, 2)


def test_xl_decoder_is_a_causal_stack_for_decoder_lm():
  decoder = XLDecoder(vocab_size=11, emb_dim=E, num_heads=HEADS, num_layers=LAYERS,
                      qkv_dim=QKV, mlp_dim=MLP, max_len=8, segment_length=4, memory_length=4)
  model = DecoderLM(decoder, vocab_size=11, tie_embeddings=True)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (B, 8), 0, 11)
  batch = {"inputs": tokens, "mask": jnp.ones((B, 8), bool)}
  variables = model.init(jax.random.PRNGKey(1), batch)
  assert "positions" not in variables["params"]["decoder"]["embed"]  # relative positions only
  logits, _ = model.apply(variables, batch)
  assert logits.shape == (B, 8, 11) and np.isfinite(np.asarray(logits)).all()
  later = dict(batch, inputs=tokens.at[:, 5:].set((tokens[:, 5:] + 1) % 11))
  moved, _ = model.apply(variables, later)
  np.testing.assert_allclose(np.asarray(moved)[:, :5], np.asarray(logits)[:, :5], atol=1e-6)
  assert np.abs(np.asarray(moved)[:, 5:] - np.asarray(logits)[:, 5:]).max() > 1e-4


@pytest.mark.parametrize("length,segment,memory", [(12, 4, 4), (8, 4, 0), (6, 2, 8)])
def test_incremental_decoding_equals_the_segmented_forward(length, segment, memory):
  """Token by token through the cache (models/generate.py's teacher forcing, under lax.scan)
  == the segmented full forward, also where M < L - S forgets; the cache is M + S states per
  layer whatever the length."""
  def lm(max_len):
    return DecoderLM(XLDecoder(vocab_size=11, emb_dim=E, num_heads=HEADS, num_layers=LAYERS,
                               qkv_dim=QKV, mlp_dim=MLP, max_len=max_len,
                               segment_length=segment, memory_length=memory,
                               dropout_rate=0.0, attention_dropout_rate=0.0), vocab_size=11)
  tokens = jax.random.randint(jax.random.PRNGKey(0), (B, length), 0, 11)
  batch = {"inputs": tokens, "mask": jnp.ones((B, length), bool)}
  params = lm(length).init(jax.random.PRNGKey(1), batch)["params"]
  full, _ = lm(length).apply({"params": params}, batch)
  stepped = jax.jit(lambda p, t: generate.teacher_forced_logits(lm(length), p, t))(params, tokens)
  np.testing.assert_allclose(np.asarray(stepped), np.asarray(full), atol=1e-4, rtol=1e-4)
  shapes = lambda n: jax.tree_util.tree_map(
      jnp.shape, generate.init_cache(lm(n), params, B, n))
  assert shapes(length) == shapes(2 * length)
  assert shapes(length)["decoder"]["buffers"] == (LAYERS, B, memory + segment, E)
