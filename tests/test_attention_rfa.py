"""RFA: the linear forms equal dense O(L^2) references over the same random features, the gated
causal form equals the step-by-step recurrence of eq. 7, many features approach Gaussian-kernel
attention on l2-normalised q, k, and gating is refused without causal."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.rfa import draw_projection, rfa_attention

HEADS, DIM = 2, 8


def qkv(seed, length=16, batch=2):
  rng = np.random.default_rng(seed)
  return [rng.standard_normal((batch, length, HEADS, DIM)).astype(np.float32) for _ in range(3)]


def projection(num_features, seed=0, sigma=1.0):
  return np.asarray(draw_projection(jax.random.key(seed), HEADS, num_features, DIM, False)) * sigma


def features(x, w, feature_map):
  """Numpy phi of sec. 3: l2-normalised x (the authors' |x| + 1e-3), D^-1/2 [sin, cos] or ReLU."""
  x = x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-3)
  logits = np.einsum("blhd,hmd->blhm", x, w)
  if feature_map == "gaussian":
    return np.concatenate([np.sin(logits), np.cos(logits)], -1) / np.sqrt(w.shape[1])
  return np.maximum(logits, 0.0) / np.sqrt(w.shape[1])


def dense_reference(q, k, v, w, feature_map, causal, kv_mask=None, eps=1e-3):
  scores = np.einsum("bihm,bjhm->bhij", features(q, w, feature_map), features(k, w, feature_map))
  if kv_mask is not None:
    scores = scores * kv_mask[:, None, None, :]
  if causal:
    scores = np.tril(scores)
  den = np.maximum(np.abs(scores.sum(-1)), eps)
  return np.einsum("bhij,bjhd->bihd", scores, v) / den.transpose(0, 2, 1)[..., None]


@pytest.mark.parametrize("feature_map", ["gaussian", "arccos"])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_forms_equal_the_dense_kernel_reference(feature_map, causal):
  q, k, v = qkv(0)
  w = projection(32)
  mask = np.arange(16)[None, :] < np.array([[16], [11]])
  out = rfa_attention(q, k, v, w, q_mask=mask, kv_mask=mask, causal=causal,
                      feature_map=feature_map, chunk_size=5)   # 4 chunks, the last one short
  expected = dense_reference(q, k, v, w, feature_map, causal, kv_mask=mask) * mask[..., None, None]
  np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)


def test_gated_causal_form_equals_the_recurrence_of_eq_7():
  q, k, v = qkv(1)
  w = projection(16)
  gate_logits = np.random.default_rng(2).standard_normal((2, 16, HEADS)).astype(np.float32)
  out = rfa_attention(q, k, v, w, gate_logits=gate_logits, causal=True, chunk_size=6)
  phi_q, phi_k = features(q, w, "gaussian"), features(k, w, "gaussian")
  g = 1.0 / (1.0 + np.exp(-gate_logits))                     # [b, l, h]
  s = np.zeros((2, HEADS, 32, DIM))
  z = np.zeros((2, HEADS, 32))
  expected = np.zeros_like(v)
  for t in range(16):
    gt = g[:, t, :, None]
    s = gt[..., None] * s + (1 - gt)[..., None] * np.einsum("bhm,bhd->bhmd", phi_k[:, t], v[:, t])
    z = gt * z + (1 - gt) * phi_k[:, t]
    den = np.maximum(np.abs(np.einsum("bhm,bhm->bh", phi_q[:, t], z)), 1e-3)
    expected[:, t] = np.einsum("bhm,bhmd->bhd", phi_q[:, t], s) / den[..., None]
  np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)
  # The gate matters: the ungated prefix sums (the dense causal reference) differ.
  plain = dense_reference(q, k, v, w, "gaussian", causal=True)
  assert np.abs(plain - expected).max() > 1e-2


def test_gated_padding_is_skipped_exactly():
  q, k, v = qkv(3, batch=1)
  w = projection(16)
  gate_logits = np.random.default_rng(4).standard_normal((1, 16, HEADS)).astype(np.float32)
  mask = np.arange(16)[None, :] < 10
  noisy = [np.where(mask[..., None, None], t, 1e3) for t in (q, k, v)]
  out = rfa_attention(*noisy, w, gate_logits=np.where(mask[..., None], gate_logits, 50.0),
                      q_mask=mask, kv_mask=mask, causal=True, chunk_size=4)
  cut = rfa_attention(q[:, :10], k[:, :10], v[:, :10], w, gate_logits=gate_logits[:, :10],
                      causal=True, chunk_size=4)
  np.testing.assert_allclose(out[:, :10], cut, atol=1e-5)
  assert np.all(np.asarray(out[:, 10:]) == 0.0)


def test_many_features_approximate_gaussian_kernel_attention():
  # E[phi(x) . phi(y)] = exp(-|x - y|^2 / 2) on the normalised vectors (Theorem 1, sigma = 1).
  q, k, v = qkv(5, batch=1)
  unit = lambda x: x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-3)
  kernel = np.exp(-0.5 * np.sum((unit(q)[:, :, None] - unit(k)[:, None]) ** 2, -1))  # b i j h
  exact = np.einsum("bijh,bjhd->bihd", kernel, v) / kernel.sum(2)[..., None]
  error = lambda m: float(np.abs(rfa_attention(q, k, v, projection(m, seed=1)) - exact).max())
  many, few = error(8192), error(8)
  assert many < 0.05, many
  assert many < 0.25 * few, (many, few)


def test_zero_vectors_get_finite_gradients():
  # Padded tokens can reach the mixer as exact zeros (zeroed embeddings, no projection bias):
  # the l2 normalisation must not turn them into NaN gradients for everyone else.
  q, k, v = qkv(8)
  q[:, 10:], k[:, 10:] = 0.0, 0.0
  w = projection(8)
  mask = np.arange(16)[None, :] < 10
  grads = jax.jit(jax.grad(lambda q, k: rfa_attention(
      q, k, v, w, q_mask=mask, kv_mask=mask, causal=True, chunk_size=8).sum(), (0, 1)))(q, k)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_gating_without_causal_is_a_build_time_error():
  with pytest.raises(ValueError, match="gating=True"):
    registry.build_mixer("rfa", {"gating": True})
  registry.build_mixer("rfa", {"gating": True}, causal=True)


def test_module_redraws_in_training_learns_sigma_and_reads_the_gate_from_inputs_q():
  q, k, v = qkv(6)
  x = np.random.default_rng(7).standard_normal((2, 16, 12)).astype(np.float32)
  mixer = registry.build_mixer("rfa", {"num_features": 16, "gating": True}, causal=True)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  variables = mixer.init(rngs, q, k, v, inputs_q=x)
  assert jax.tree.map(lambda p: p.shape, variables["params"]) == {
      "sigma": (HEADS, 1, DIM), "gate": {"kernel": (12, HEADS), "bias": (HEADS,)}}

  def run(params, seed, deterministic):
    return mixer.apply({"params": params}, q, k, v, inputs_q=x, deterministic=deterministic,
                       rngs={"dropout": jax.random.key(seed)})

  @jax.jit   # one compile for every check
  def checks(params):
    outputs = [run(params, seed, det) for seed, det in ((1, True), (2, True), (1, False),
                                                        (2, False))]
    return outputs, jax.grad(lambda p: run(p, 1, True).sum())(params)

  (eval_a, eval_b, train_a, train_b), grads = checks(variables["params"])
  np.testing.assert_array_equal(eval_a, eval_b)
  assert np.abs(np.asarray(train_a - train_b)).max() > 1e-3
  assert np.abs(np.asarray(grads["sigma"])).max() > 0
  assert np.abs(np.asarray(grads["gate"]["kernel"])).max() > 0


# Incremental decoding (decode="state"): the recurrence of eq. 6 / eq. 7, one token at a time.
from tests import state_decoding  # noqa: E402  pylint: disable=wrong-import-position


@pytest.mark.parametrize("kwargs", [{"gating": True}, {"feature_map": "arccos"},
                                    {"orthogonal": True, "learn_sigma": False}])
def test_decoding_step_by_step_equals_the_causal_forward_with_a_constant_state(kwargs):
  mixer = registry.build_mixer("rfa", {"num_features": 8, "chunk_size": 5, **kwargs},
                               causal=True)
  q, k, v = state_decoding.qkv(0, 13, heads=4, kv_heads=2)
  x = np.random.default_rng(1).standard_normal((2, 13, 12)).astype(np.float32)
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v, inputs_q=x)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  width = 8 if kwargs.get("feature_map") == "arccos" else 16
  shapes = state_decoding.cache_shapes(cache)
  # one random matrix, so one state, per query head
  assert shapes == {"index": ((), "int32"), "state": ((2, 4, width, 8), "float32"),
                    "normaliser": ((2, 4, width), "float32"),
                    "projection": ((4, 8, 8), "float32")}
  longer = mixer.init(jax.random.key(0), *state_decoding.qkv(1, 29, heads=4, kv_heads=2),
                      inputs_q=np.zeros((2, 29, 12), np.float32), decode=True)["cache"]
  assert state_decoding.cache_shapes(longer) == shapes


def test_decoding_through_the_base_with_rope_and_grouped_heads():
  full, stepped, _ = state_decoding.attention_decode("rfa", {"num_features": 8,
                                                              "gating": True}, 11)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)


def test_decoding_in_bfloat16_keeps_the_dtype_and_a_float32_state():
  mixer = registry.build_mixer("rfa", {"num_features": 8, "gating": True}, causal=True)
  q, k, v = (x.astype(jnp.bfloat16) for x in state_decoding.qkv(2, 9))
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 9, 12)), jnp.bfloat16)
  full, stepped, cache = state_decoding.mixer_decode(mixer, q, k, v, inputs_q=x)
  assert stepped.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(stepped)))
  assert cache["state"].dtype == jnp.float32
  np.testing.assert_allclose(np.float32(stepped), np.float32(full), atol=5e-2, rtol=5e-2)
