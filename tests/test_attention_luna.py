"""Luna (Ma et al. 2021): the mixer equals a dense NumPy reference of pack/unpack (sec. 3) and
P' = LN(Y_P + P) (eq. 6), the first block builds P from its learned embedding, the memory is
carried (outputs depend on it), dynamic projection ignores P's rows past an example's length,
padding moves neither y nor P', and one real token gives the exact limit y = out(v(pv(x)))."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry

D, HEADS, PLEN, LENGTH, VALID = 16, 2, 5, 12, 4


def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def attention(q, k, v, key_mask):
  """Per-head softmax(q k^T / sqrt(dh)) v over the kept keys, head by head."""
  dh = D // HEADS
  out = []
  for j in range(HEADS):
    s = slice(j * dh, (j + 1) * dh)
    scores = q[:, s] @ k[:, s].T / math.sqrt(dh)
    scores = np.where(key_mask[None, :], scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    out.append((w / w.sum(-1, keepdims=True)) @ v[:, s])
  return np.concatenate(out, -1)


def reference(params, x, p, n, tie_kv=False, dynamic=True):
  """Eq. 5-6 for one example with n real tokens x[:n]: Y_P = Attn(P, X), Y_X = Attn(X, Y_P),
  P' = LN(Y_P + P); returns (out_proj(Y_X) [n, d], P' [l, d])."""
  prm = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  names = {"pv": "pc", "pk": "pc", "v": "c", "k": "c"} if tie_kv else {}
  dense = lambda name, a: (a @ prm[f"{names.get(name, name)}_proj_kernel"]
                           + prm[f"{names.get(name, name)}_proj_bias"])
  x = x[:n]
  y_p = attention(dense("pq", p), dense("pk", x), dense("pv", x), np.ones(n, bool))
  keys = np.arange(p.shape[0]) < n if dynamic else np.ones(p.shape[0], bool)
  y_x = attention(dense("q", x), dense("k", y_p), dense("v", y_p), keys)
  return dense("out", y_x), layer_norm(y_p + p, prm["packed_norm"])


def first_p(params):
  """Sec. 3's first-layer P as the code builds it: LN(sqrt(d) E + sinusoidal positions)."""
  prm = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  half = D // 2
  freqs = np.exp(np.arange(half) * -(math.log(10000.0) / (half - 1)))
  angles = np.arange(PLEN)[:, None] * freqs[None, :]
  sinusoid = np.concatenate([np.sin(angles), np.cos(angles)], 1)
  return layer_norm(prm["packed_embedding"] * math.sqrt(D) + sinusoid,
                    prm["packed_embedding_norm"])


def build(**kwargs):
  return registry.build_mixer("luna", {"packed_length": PLEN, "num_heads": HEADS, **kwargs})


def data(seed=0):
  keys = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(keys[0], (2, LENGTH, D))
  memory = jax.random.normal(keys[1], (2, PLEN, D))
  noise = 100.0 * jax.random.normal(keys[2], (2, LENGTH, D))
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[VALID], [LENGTH]])
  return x, memory, jnp.where(mask[..., None], x, noise), mask


@pytest.mark.parametrize("tie_kv,dynamic", [(False, True), (True, False)])
def test_matches_the_dense_reference_and_padding_moves_nothing(tie_kv, dynamic):
  """VALID = 4 < l = 5 real tokens in example 0: dynamic projection masks P's last row there."""
  mixer = build(tie_kv=tie_kv, dynamic_projection=dynamic)
  x, memory, noisy, mask = data()

  @jax.jit
  def run(x, noisy, memory):
    variables = mixer.init(jax.random.key(1), x, mask)
    return (variables, mixer.apply(variables, x, mask, memory=memory),
            mixer.apply(variables, noisy, mask, memory=memory), mixer.apply(variables, x, mask),
            mixer.apply(variables, noisy, mask))

  variables, with_memory, noisy_memory, first, noisy_first = run(x, noisy, memory)
  params = variables["params"]
  x64 = np.asarray(x, np.float64)
  for b, n in enumerate((VALID, LENGTH)):
    for (y, next_p), (y2, next_p2), p in (
        (with_memory, noisy_memory, np.asarray(memory[b], np.float64)),
        (first, noisy_first, first_p(params))):
      want_y, want_p = reference(params, x64[b], p, n, tie_kv, dynamic)
      for got in (y, y2):
        np.testing.assert_allclose(np.asarray(got[b, :n]), want_y, atol=3e-5, rtol=3e-5)
        assert np.all(np.asarray(got[b, n:]) == 0)
      for got in (next_p, next_p2):
        np.testing.assert_allclose(np.asarray(got[b]), want_p, atol=3e-5, rtol=3e-5)


def test_the_memory_is_carried_and_dynamic_projection_ignores_unused_rows():
  mixer = build()
  x, memory, _, mask = data(1)
  variables = mixer.init(jax.random.key(2), x, mask)
  apply = jax.jit(lambda memory: mixer.apply(variables, x, mask, memory=memory))
  y, next_p = apply(memory)
  # Another memory moves both outputs of both examples.
  y2, next_p2 = apply(memory + 1.0)
  assert np.abs(np.asarray(y2 - y)).max() > 1e-3
  assert np.abs(np.asarray(next_p2 - next_p)).max() > 1e-3
  # Rows of P at or past an example's length (example 0: VALID = 4 of l = 5) are never read by
  # its tokens: y unchanged, P' changes only in that row.
  y3, next_p3 = apply(memory.at[0, VALID:].add(5.0))
  np.testing.assert_array_equal(np.asarray(y3[0]), np.asarray(y[0]))
  assert np.abs(np.asarray(next_p3[0, VALID:] - next_p[0, VALID:])).max() > 1e-3
  np.testing.assert_allclose(np.asarray(next_p3[0, :VALID]), np.asarray(next_p[0, :VALID]),
                             atol=1e-6)
  # Without dynamic projection the same row is read.
  static = build(dynamic_projection=False)
  run = jax.jit(lambda memory: static.apply(variables, x, mask, memory=memory)[0])
  assert np.abs(np.asarray(run(memory.at[0, VALID:].add(5.0))[0] - run(memory)[0])).max() > 1e-3


def test_one_real_token_is_the_exact_limit():
  """With one real token both softmaxes are exact whatever P and the queries: every row of Y_P
  is pv(x_0) and y_0 = out(v(pv(x_0))), for any memory."""
  mixer = build()
  x, memory, _, _ = data(2)
  mask = jnp.arange(LENGTH)[None, :] < jnp.array([[1], [1]])
  variables = mixer.init(jax.random.key(3), x, mask)
  prm = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
  dense = lambda name, a: a @ prm[f"{name}_proj_kernel"] + prm[f"{name}_proj_bias"]
  for mem in (None, memory, -3.0 * memory):
    y, _ = mixer.apply(variables, x, mask, memory=mem)
    want = dense("out", dense("v", dense("pv", np.asarray(x[:, 0], np.float64))))
    np.testing.assert_allclose(np.asarray(y[:, 0]), want, atol=2e-5, rtol=2e-5)


def test_bad_settings_are_refused():
  x = jnp.ones((1, 4, D))
  with pytest.raises(ValueError, match="does not divide"):
    build(num_heads=3).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="packed_length"):
    build(packed_length=0).init(jax.random.key(0), x)
  mixer = build()
  variables = mixer.init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="memory of shape"):
    mixer.apply(variables, x, memory=jnp.ones((1, PLEN + 1, D)))
