"""Registry-wide causal no-leak test on the forward pass: change the future, the past must not
move. The gradient test in test_attention.py cannot see a dependence that runs through a sort
or an argmax (Reformer's hashing), this one can. Variants registered `causal_exact=False` are
excluded by that flag (and warn when built causally); the gradient test still covers them.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from tests.attention_cases import HEAD_DIM, HEADS, LENGTH, SMALL_KWARGS

NAMES = registry.names(kind="qkv")  # the sequence mixers: tests/test_sequence_mixers.py
CAUSAL = [n for n in NAMES if registry.get(n).supports_causal]
EXACT = [n for n in CAUSAL if registry.get(n).causal_exact]
APPROXIMATE = [n for n in CAUSAL if not registry.get(n).causal_exact]
FEATURES = HEADS * HEAD_DIM  # width of inputs_q, which some mixers (Synthesizer) read
POSITIONS = (0, 3, LENGTH // 2, LENGTH - 2)  # the last position i whose output must not move


def causal_forward(name):
  """A jitted `(q, k, v, inputs_q) -> output` of `name`'s causal mixer. Its parameters come
  from a fixed key inside (init and apply in one compile), so they are the same every call."""
  mixer = registry.build_mixer(name, SMALL_KWARGS.get(name, {}), causal=True, max_len=LENGTH,
                               kv_max_len=LENGTH, dropout_rate=0.0)
  mask = jnp.ones((1, LENGTH), bool)
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.jit(lambda q, k, v, x: mixer.init_with_output(
      rngs, q, k, v, q_mask=mask, kv_mask=mask, deterministic=True, inputs_q=x)[0])


def tensors(seed):
  keys = jax.random.split(jax.random.key(seed), 4)
  shape = (1, LENGTH, HEADS, HEAD_DIM)
  return [jax.random.normal(keys[0], shape), jax.random.normal(keys[1], shape),
          jax.random.normal(keys[2], shape), jax.random.normal(keys[3], (1, LENGTH, FEATURES))]


def largest_leak(name):
  """max over POSITIONS i of |output[:i+1] change| when q, k, v, inputs_q change after i."""
  forward = causal_forward(name)
  now, other = tensors(0), tensors(1)
  base = np.asarray(forward(*now))
  leak = 0.0
  for i in POSITIONS:
    future = (jnp.arange(LENGTH) > i)[None, :, None]
    changed = [jnp.where(future[..., None] if t.ndim == 4 else future, 3.0 * o, t)
               for t, o in zip(now, other)]
    out = np.asarray(forward(*changed))
    assert np.abs(out[0, i + 1:] - base[0, i + 1:]).max() > 0, "the future did not change"
    leak = max(leak, float(np.abs(out[0, :i + 1] - base[0, :i + 1]).max()))
  return leak


@pytest.mark.parametrize("name", EXACT)
def test_future_tokens_do_not_move_past_outputs(name):
  # Measured: exactly 0 for every exact variant (the future only ever meets zero weights).
  leak = largest_leak(name)
  assert leak <= 1e-6, f"{name}: changing tokens after i moves outputs <= i by {leak:.2g}"


@pytest.mark.parametrize("name", APPROXIMATE)
def test_approximately_causal_variants_do_leak(name):
  # The flag is not a free pass: a variant marked approximately causal really is (else drop
  # the flag and let the test above hold it to exact causality).
  assert largest_leak(name) > 1e-3


def test_building_an_approximately_causal_variant_warns():
  for name in APPROXIMATE:
    with pytest.warns(registry.ApproximatelyCausalWarning, match=f"{name!r} is only approx"):
      registry.build_mixer(name, SMALL_KWARGS.get(name, {}), causal=True, max_len=LENGTH)
