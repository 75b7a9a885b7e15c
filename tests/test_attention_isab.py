"""ISAB (Set Transformer, Lee et al. 2019): the shared post-norm block around the mixer equals a
dense NumPy reference of eq. 8-9, padding never enters MAB(I, X), one inducing point gives every
token the same output, and the mixer is permutation-equivariant (a set function)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.blocks import EncoderBlock

D, HEADS, M, LENGTH, VALID = 16, 2, 3, 12, 7


def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def multihead(p, queries, keys, key_mask):
  """Vaswani's multi-head attention, head by head, with a loop-free softmax per head."""
  out = 0.0
  for j in range(HEADS):
    proj = lambda name, a: a @ p[name]["kernel"][:, j] + p[name]["bias"][j]
    q, k, v = proj("query", queries), proj("key", keys), proj("value", keys)
    scores = q @ k.T / np.sqrt(q.shape[-1])
    scores = np.where(key_mask[None, :], scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = out + (w @ v) @ p["out"]["kernel"][j]
  return out + p["out"]["bias"]


def mab(p, x, y, y_mask, rff, ln_params, use_ln=True):
  """Eq. 8: LN(H + rFF(H)), H = LN(X + Multihead(X, Y, Y))."""
  norm = (lambda a, name: layer_norm(a, ln_params[name])) if use_ln else (lambda a, name: a)
  h = norm(x + multihead(p, x, y, y_mask), "norm0")
  return norm(h + rff(h), "norm1")


def gelu(x):  # flax's nn.gelu (tanh form)
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def isab_reference(params, x, mask, layer_norm_inner):
  """ISAB_m(X) = MAB(X, MAB(I, X)) (eq. 9) for one example: inner rFF = relu(Dense) (the
  authors' code), outer MAB's rFF and norms = the block's FFN and post-norm LayerNorms."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  mixer = p["attention"]["mixer"]
  inner = mixer["induced"]
  relu_rff = lambda h: np.maximum(h @ inner["rff"]["kernel"] + inner["rff"]["bias"], 0.0)
  h_i = mab(inner["attention"], mixer["inducing_points"], x, mask, relu_rff, inner,
            layer_norm_inner)
  ffn = p["ffn"]
  block_rff = lambda h: gelu(h @ ffn["in"]["kernel"] + ffn["in"]["bias"]) @ ffn["out"][
      "kernel"] + ffn["out"]["bias"]
  outer_norms = {"norm0": p["attention_norm"], "norm1": p["ffn_norm"]}
  return mab(mixer["attention"], x, h_i, np.ones(h_i.shape[0], bool), block_rff, outer_norms)


@pytest.mark.parametrize("layer_norm_inner", [True, False])
def test_the_post_norm_block_is_eq_8_9_and_padding_never_enters(layer_norm_inner):
  block = EncoderBlock(num_heads=HEADS, qkv_dim=D, mlp_dim=32, attention="isab",
                       attention_kwargs={"num_inducing": M, "num_heads": HEADS,
                                         "layer_norm": layer_norm_inner},
                       prenorm=False, ffn="mlp", dropout_rate=0.0, attention_dropout_rate=0.0)
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, LENGTH, D)), np.float64)
  mask = np.arange(LENGTH)[None, :] < np.array([[VALID], [LENGTH]])
  noisy = np.where(mask[..., None], x, 100.0 * np.asarray(jax.random.normal(jax.random.key(5),
                                                                             x.shape)))

  @jax.jit
  def run(x, noisy):
    variables = block.init(jax.random.key(1), x, mask)
    return variables, block.apply(variables, x, mask), block.apply(variables, noisy, mask)

  variables, out, out_noisy = run(jnp.asarray(x, jnp.float32), jnp.asarray(noisy, jnp.float32))
  out, out_noisy = np.asarray(out), np.asarray(out_noisy)
  for b in range(2):
    n = int(mask[b].sum())
    want = isab_reference(variables["params"], x[b, :n], mask[b, :n], layer_norm_inner)
    np.testing.assert_allclose(out[b, :n], want, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(out_noisy[b, :n], want, atol=2e-5, rtol=2e-5)
  assert np.all(out[0, VALID:] == 0) and np.all(out_noisy[0, VALID:] == 0)


def mixer_and_params(**kwargs):
  mixer = registry.build_mixer("isab", {"num_heads": HEADS, "num_inducing": M, **kwargs})
  x = jax.random.normal(jax.random.key(2), (1, LENGTH, D))
  return mixer, mixer.init(jax.random.key(3), x), x


def test_one_inducing_point_gives_every_token_the_same_output():
  """m = 1: the outer attention has one key, so y_i = (h W_V + b_V) W_O + b_O for every i,
  whatever X_i's query; with m = 3 the tokens differ."""
  mixer, variables, x = mixer_and_params(num_inducing=1)
  mask = jnp.arange(LENGTH)[None, :] < VALID
  y = np.asarray(mixer.apply(variables, x, mask))
  np.testing.assert_allclose(y[0, :VALID], np.broadcast_to(y[0, :1], (VALID, D)), atol=1e-6)
  assert np.all(y[0, VALID:] == 0)
  mixer3, variables3, _ = mixer_and_params()
  y3 = np.asarray(mixer3.apply(variables3, x, mask))
  assert np.abs(y3[0, 1:VALID] - y3[0, :1]).max() > 1e-3


def test_permutation_equivariant():
  """No positions inside: permuting the tokens permutes the outputs (a set function, sec. 3)."""
  mixer, variables, x = mixer_and_params()
  perm = np.random.default_rng(0).permutation(LENGTH)
  y = np.asarray(mixer.apply(variables, x))
  y_perm = np.asarray(mixer.apply(variables, x[:, perm]))
  np.testing.assert_allclose(y_perm, y[:, perm], atol=1e-5, rtol=1e-5)


def test_bad_settings_are_refused():
  x = jnp.ones((1, 4, D))
  for kwargs, match in (({"num_heads": 3}, "does not divide"), ({"num_inducing": 0}, ">= 1")):
    with pytest.raises(ValueError, match=match):
      registry.build_mixer("isab", kwargs).init(jax.random.key(0), x)
