"""Cross attention by value: queries from x, keys and values from a context of another length.

Every variant that supports cross attention is compared with a reference written here in numpy
from its paper's formula and its own parameters (or with exact softmax cross attention where it
estimates it), and the shared base's cross path (q from x, k/v from the context, the context's
padding mask, `out_dim`, the errors) is checked against an inline projection.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import MultiHeadAttention, registry
from models.attention.performer import performer_attention

BATCH, LQ, LK, HEADS, DIM, FEATURES = 2, 8, 12, 2, 4, 12
CROSS = [n for n in registry.names() if registry.get(n).supports_cross]
NOT_CROSS = [n for n in registry.names() if not registry.get(n).supports_cross]
# Cross-capable variants with settings that fit these shapes.
CROSS_KWARGS = {"performer": {"num_features": 16, "redraw": False},
                "linformer": {"k": 4, "sharing": "none"},
                "synthesizer": {"mode": "mixture", "mixture": ("dense", "random"),
                                "with_dot_product": True}}


def arrays(seed, scale=1.0):
  rng = np.random.default_rng(seed)
  q = scale * rng.standard_normal((BATCH, LQ, HEADS, DIM)).astype(np.float32)
  k, v = (scale * rng.standard_normal((BATCH, LK, HEADS, DIM)).astype(np.float32)
          for _ in range(2))
  return q, k, v


Q_MASK = np.arange(LQ)[None, :] < np.array([[LQ], [LQ - 3]])
KV_MASK = np.arange(LK)[None, :] < np.array([[LK - 4], [LK]])   # context padded in row 0


def np_softmax(x, axis=-1):
  x = x - x.max(axis, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis, keepdims=True)


def weighted_values(weights, v, q_mask):
  """weights `[b, h, lq, lk]` (zero at padded keys) -> `[b, lq, h, d]`, padded queries zero."""
  out = np.einsum("bhqk,bkhd->bqhd", weights, v)
  return np.where(q_mask[:, :, None, None], out, 0.0)


def softmax_reference(q, k, v, q_mask, kv_mask, logits=None):
  if logits is None:
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  logits = np.where(kv_mask[:, None, None, :], logits, -np.inf)
  return weighted_values(np_softmax(logits), v, q_mask)


def mixer_apply(name, kwargs, q, k, v, inputs_q=None, params_seed=0):
  mixer = registry.build_mixer(name, kwargs, cross=True, max_len=LQ, kv_max_len=LK)
  call = dict(q_mask=Q_MASK, kv_mask=KV_MASK, inputs_q=inputs_q)
  variables = jax.jit(lambda q, k, v: mixer.init(jax.random.key(params_seed), q, k, v, **call))(
      q, k, v)
  out = jax.jit(lambda variables, q, k, v: mixer.apply(variables, q, k, v, **call))(
      variables, q, k, v)
  return np.asarray(out), jax.tree_util.tree_map(np.asarray, variables)


@pytest.mark.parametrize("options", [{"implementation": "dense"},
                                     {"implementation": "blocked", "block_q": 3, "block_k": 5},
                                     {"implementation": "xla"}], ids=lambda o: o["implementation"])
def test_transformer_cross_is_exact_softmax(options):
  q, k, v = arrays(0)
  out, _ = mixer_apply("transformer", options, q, k, v)
  np.testing.assert_allclose(out, softmax_reference(q, k, v, Q_MASK, KV_MASK), atol=1e-5,
                             rtol=1e-5)


def test_linear_transformer_cross_is_its_kernel_formula():
  # Katharopoulos et al. 2020, eq. 4-7: phi = elu + 1, out_i = sum_j phi_i.phi_j v_j / sum_j.
  q, k, v = arrays(1)
  out, _ = mixer_apply("linear_transformer", {}, q, k, v)
  phi = lambda x: np.where(x > 0, x + 1.0, np.exp(x))
  similarity = np.einsum("bqhd,bkhd->bhqk", phi(q), phi(k)) * KV_MASK[:, None, None, :]
  weights = similarity / similarity.sum(-1, keepdims=True)
  np.testing.assert_allclose(out, weighted_values(weights, v, Q_MASK), atol=1e-5, rtol=1e-5)


def test_linformer_cross_is_its_projection_formula():
  # Wang et al. 2020, eq. 7: softmax(Q (E K)^T / sqrt(d)) (F V), E and F over the context's
  # kv_max_len positions; padded context tokens are zeroed before projecting (module docstring).
  q, k, v = arrays(2)
  out, variables = mixer_apply("linformer", CROSS_KWARGS["linformer"], q, k, v)
  e, f = variables["params"]["E"], variables["params"]["F"]     # [h, LK, k]
  assert e.shape == (HEADS, LK, 4) and not np.allclose(e, f)
  keep = KV_MASK[:, :, None, None]
  k_proj = np.einsum("bnhd,hnr->brhd", np.where(keep, k, 0.0), e)
  v_proj = np.einsum("bnhd,hnr->brhd", np.where(keep, v, 0.0), f)
  weights = np_softmax(np.einsum("bqhd,brhd->bhqr", q, k_proj) / np.sqrt(DIM))
  np.testing.assert_allclose(out, weighted_values(weights, v_proj, Q_MASK), atol=1e-5,
                             rtol=1e-5)


def test_synthesizer_cross_mixes_its_synthesised_logits():
  # Tay et al. 2021: dense B_i = W2 relu(W1 x_i + b1) + b2 (sec. 3.1) from the *query* input,
  # random B = R [max_len, kv_max_len], mixed with Q K^T / sqrt(d) by softmax(alpha) (sec. 3.3),
  # then softmax over the context's real keys and Y = softmax(B) V (values from the context).
  q, k, v = arrays(3)
  x = np.random.default_rng(4).standard_normal((BATCH, LQ, FEATURES)).astype(np.float32)
  mixer = registry.build_mixer("synthesizer", CROSS_KWARGS["synthesizer"], cross=True,
                               max_len=LQ, kv_max_len=LK)
  call = dict(q_mask=Q_MASK, kv_mask=KV_MASK, inputs_q=x)
  p = jax.tree_util.tree_map(np.asarray, jax.jit(
      lambda: mixer.init(jax.random.key(0), q, k, v, **call))()["params"])
  p = dict(p, mixture_logits=np.array([0.4, -0.3, 0.2], np.float32))   # unequal weights
  out = jax.jit(lambda params: mixer.apply({"params": params}, q, k, v, **call))(p)
  hidden = np.maximum(np.einsum("bqf,fhe->bqhe", x, p["dense_hidden"]["kernel"])
                      + p["dense_hidden"]["bias"], 0.0)
  dense = (np.einsum("bqhe,hen->bhqn", hidden, p["dense_out_kernel"])
           + p["dense_out_bias"][None, :, None, :])
  assert p["random"].shape == (HEADS, LQ, LK)
  dot = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(DIM)
  alpha = np_softmax(p["mixture_logits"])
  logits = alpha[0] * dense + alpha[1] * p["random"][None] + alpha[2] * dot
  np.testing.assert_allclose(out, softmax_reference(q, k, v, Q_MASK, KV_MASK, logits),
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", ["softmax", "relu"])
def test_performer_cross_is_its_feature_formula(kernel):
  # Choromanski et al. 2021, Lemma 1: phi+(x) = m^-1/2 exp(W x' - |x'|^2 / 2), x' = x / d^1/4;
  # generalised ReLU kernel (sec. 2.3): relu(W x) + 1e-3. Then out = phi(Q) phi(K)^T V / norm.
  # The projection is drawn here, so the features are independent of the implementation's.
  q, k, v = arrays(5, scale=0.7)
  w = np.random.default_rng(6).standard_normal((16, DIM)).astype(np.float32)
  out = jax.jit(lambda q, k, v: performer_attention(q, k, v, w, q_mask=Q_MASK, kv_mask=KV_MASK,
                                                    kernel=kernel))(q, k, v)
  if kernel == "softmax":
    features = lambda x: np.exp(np.einsum("blhd,md->blhm", x / DIM ** 0.25, w)
                                - 0.5 * np.sum((x / DIM ** 0.25) ** 2, -1, keepdims=True)) / 4.0
  else:
    features = lambda x: np.maximum(np.einsum("blhd,md->blhm", x, w), 0.0) + 1e-3
  similarity = np.einsum("bqhm,bkhm->bhqk", features(q), features(k)) * KV_MASK[:, None, None, :]
  weights = similarity / similarity.sum(-1, keepdims=True)
  np.testing.assert_allclose(out, weighted_values(weights, v, Q_MASK), atol=2e-5, rtol=1e-4)


def test_performer_cross_estimates_softmax_with_many_features():
  # FAVOR+ is unbiased for exp(q.k / sqrt(d)); its relative error falls as m^-1/2 (Lemma 2).
  # With |q|, |k| ~ 0.5 * sqrt(d) and m = 4096 orthogonal features the outputs were within
  # 6e-3 to 8e-3 (max abs) of exact over three input draws (seeds 7, 11, 12); with 16 features
  # 0.08 to 0.10, the ~m^-1/2 fall. The bound 1.5e-2 is twice the worst measured.
  q, k, v = arrays(7, scale=0.5)
  exact = softmax_reference(q, k, v, Q_MASK, KV_MASK)
  errors = {}
  for m in (16, 4096):
    out, _ = mixer_apply("performer", {"num_features": m, "redraw": False}, q, k, v)
    errors[m] = np.abs(out - exact).max()
  assert errors[4096] < 1.5e-2, errors
  assert errors[16] > 3 * errors[4096], errors


# The shared base: projections, the context mask, out_dim, errors.
def build_base(name="transformer", out_dim=None, cross=True, causal=False, kwargs=None):
  return MultiHeadAttention(num_heads=HEADS, qkv_dim=HEADS * DIM, attention=name, cross=cross,
                            causal=causal, attention_kwargs=kwargs, max_len=LQ, kv_max_len=LK,
                            out_dim=out_dim)


def base_inputs(seed=8):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((BATCH, LQ, FEATURES)).astype(np.float32)
  context = rng.standard_normal((BATCH, LK, FEATURES)).astype(np.float32)
  return x, context


def test_base_projects_queries_from_x_and_keys_values_from_context_with_out_dim():
  x, context = base_inputs()
  layer = build_base(out_dim=5)
  call = dict(mask=Q_MASK, context=context, context_mask=KV_MASK)
  variables = jax.jit(lambda x, c: layer.init(jax.random.key(0), x, context=c, mask=Q_MASK,
                                              context_mask=KV_MASK))(x, context)
  out = np.asarray(jax.jit(lambda v, x: layer.apply(v, x, **call))(variables, x))
  assert out.shape == (BATCH, LQ, 5) and FEATURES != 5
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  project = lambda t, which: np.einsum("blf,fhd->blhd", t, p[which]["kernel"])
  mixed = softmax_reference(project(x, "query"), project(context, "key"),
                            project(context, "value"), Q_MASK, KV_MASK)
  want = np.einsum("blhd,hdo->blo", mixed, p["out"]["kernel"])
  np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CROSS)
def test_base_context_padding_is_hidden(name):
  x, context = base_inputs(9)
  kwargs = {"mode": "random"} if name == "synthesizer" else CROSS_KWARGS.get(name)
  layer = build_base(name, kwargs=kwargs)
  variables = jax.jit(lambda x, c: layer.init(jax.random.key(0), x, context=c, mask=Q_MASK,
                                              context_mask=KV_MASK))(x, context)
  apply = jax.jit(lambda c: layer.apply(variables, x, mask=Q_MASK, context=c,
                                        context_mask=KV_MASK))
  out = np.asarray(apply(context))
  noise = 50.0 * np.random.default_rng(10).standard_normal(context.shape).astype(np.float32)
  padded_changed = np.where(KV_MASK[..., None], context, noise)
  np.testing.assert_allclose(apply(padded_changed), out, atol=1e-5, rtol=1e-5)
  real_changed = context.copy()
  real_changed[0, 2] += 3.0   # a real context token of row 0 does matter
  assert np.abs(np.asarray(apply(real_changed))[0, :] - out[0]).max() > 1e-4


def test_base_cross_errors_are_clear():
  x, context = base_inputs()
  init = lambda layer, **kw: jax.eval_shape(
      lambda: layer.init(jax.random.key(0), x, mask=Q_MASK, **kw))
  with pytest.raises(ValueError, match="build it with cross=True"):
    init(build_base(cross=False), context=context, context_mask=KV_MASK)
  for name in NOT_CROSS:
    with pytest.raises(ValueError, match="does not support cross attention"):
      init(build_base(name), context=context, context_mask=KV_MASK)
  # Causal linear attention is a prefix sum over one sequence: other lengths are refused.
  for name in ("performer", "linear_transformer"):
    with pytest.raises(ValueError, match="as many queries as keys"):
      init(build_base(name, causal=True, kwargs=CROSS_KWARGS.get(name)), context=context,
           context_mask=KV_MASK)
