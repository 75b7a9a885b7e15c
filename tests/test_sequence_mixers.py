"""Registry-wide tests of the sequence mixers (kind "sequence": S4D, S5, LRU, Mega, H3, Hyena,
long convolutions, SGConv, and any registered later): shapes, dtype and padding invariance
(unidirectional, causal and bidirectional), jit == eager, dropout, causal no-leak (gradient and
forward), the bfloat16 option matrix (training with dropout and evaluation), compiled memory
growth from 4K to 8K, and how the shared base calls them (no q/k/v projections). Each mixer's
own file tests its maths against a sequential reference.

A mixer that carries a memory sequence between blocks (registry `memory=True`: Luna) returns
`(y, next_memory)`; every check here applies to both outputs (`outputs`). Mixers without a
causal form (Luna, ISAB) skip the causal cases.
"""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.base import MultiHeadAttention
from tests.attention_cases import HEAD_DIM, HEADS, LENGTH, MEMORY_KWARGS, OPTION_MATRIX, SMALL_KWARGS

NAMES = registry.names(kind="sequence")
FEATURES = HEADS * HEAD_DIM
VALID = LENGTH - 5  # the first example's real length in the padded batches


def fields(name):
  return {f.name: f for f in dataclasses.fields(registry.get(name).mixer)}


def outputs(out) -> tuple:
  """The mixer's outputs as a tuple: (y,), or (y, next_memory) for a memory mixer."""
  return out if isinstance(out, tuple) else (out,)


def directions(name):
  """(causal, bidirectional) pairs the mixer can be built with."""
  out = [(False, None)] + ([(True, None)] if registry.get(name).supports_causal else [])
  if "bidirectional" in fields(name):
    out.append((False, True))
  return out


def make(name, causal=False, dropout_rate=0.0, bidirectional=None, max_len=LENGTH, **extra):
  kwargs = dict(SMALL_KWARGS.get(name, {}), **extra)
  if bidirectional is not None:
    kwargs["bidirectional"] = bidirectional
  return registry.build_mixer(name, kwargs, causal=causal, max_len=max_len,
                              dropout_rate=dropout_rate)


def inputs(seed=0, batch=2, length=LENGTH, dtype=jnp.float32):
  return jax.random.normal(jax.random.key(seed), (batch, length, FEATURES)).astype(dtype)


def padded_mask(length=LENGTH):
  return jnp.arange(length)[None, :] < jnp.array([[VALID], [length]])


def forward(mixer, mask):
  """A jitted (x -> outputs tuple) with parameters from a fixed key (init and apply in one
  compile)."""
  rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
  return jax.jit(lambda x: outputs(mixer.init_with_output(rngs, x, mask, deterministic=True)[0]))


def direction_cases(names=NAMES):
  for name in names:
    for causal, bidirectional in directions(name):
      label = "causal" if causal else ("bidirectional" if bidirectional else "default")
      yield pytest.param(name, causal, bidirectional, id=f"{name}-{label}")


def test_the_sequence_mixers_are_registered():
  assert {"s4d", "s5", "lru", "mega", "h3", "hyena", "long_conv", "sgconv"} <= set(NAMES)
  for name in NAMES:
    spec = registry.get(name)
    assert not spec.supports_cross
    assert ("causal" in fields(name)) == spec.supports_causal, name


@pytest.mark.parametrize("name,causal,bidirectional", list(direction_cases()))
def test_padding_invariance(name, causal, bidirectional):
  """Shape, dtype and finite outputs; huge values at padded positions do not move any real output
  (a bidirectional state must not run from padding into the real tokens); the unpadded example
  is untouched too."""
  mask = padded_mask()
  run = forward(make(name, causal=causal, bidirectional=bidirectional), mask)
  x = inputs()
  noisy = jnp.where(mask[..., None], x, 100.0 * inputs(5))
  outs, outs2 = run(x), run(noisy)
  out, out2 = np.asarray(outs[0]), np.asarray(outs2[0])
  assert out.shape == x.shape and out.dtype == x.dtype and np.all(np.isfinite(out2))
  np.testing.assert_allclose(out2[0, :VALID], out[0, :VALID], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out2[1], out[1], atol=1e-5, rtol=1e-5)
  for memory, memory2 in zip(outs[1:], outs2[1:]):  # a carried memory: padding-free as a whole
    assert memory.dtype == x.dtype
    np.testing.assert_allclose(memory2, memory, atol=1e-4, rtol=1e-4)
  # ... and the real outputs do depend on the real inputs (the check above could pass trivially).
  moved = np.asarray(run(x.at[0, 0].add(1.0))[0])
  assert np.abs(moved[0, :VALID] - out[0, :VALID]).max() > 1e-4


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get(n).supports_causal])
def test_causal_no_leak(name):
  """Built causally: output t has no gradient from inputs after t (exactly 0), and changing the
  inputs after t leaves outputs up to t unchanged, at several t."""
  mask = jnp.ones((1, LENGTH), bool)
  run_all = forward(make(name, causal=True), mask)
  run = lambda x: run_all(x)[0]
  x, other = inputs(batch=1), inputs(seed=1, batch=1)
  t = LENGTH // 2
  grad = np.abs(np.asarray(jax.grad(lambda x: run(x)[0, t].sum())(x)))
  past, future = grad[0, :t + 1].max(), grad[0, t + 1:].max()
  assert past > 0, f"{name}: output {t} ignores the past"
  # An FFT convolution's causal kernel is zero after t in exact arithmetic; float32 transforms
  # leave ~1e-8 there (a scan or a mask gives exactly 0). A leak is of the order of the past.
  assert future <= 1e-6 * past, f"{name}: output {t} sees the future ({future:.2g} vs {past:.2g})"
  base = np.asarray(run(x))
  for t in (0, 3, LENGTH // 2, LENGTH - 2):
    changed = np.asarray(run(jnp.where((jnp.arange(LENGTH) > t)[None, :, None], 3.0 * other, x)))
    assert np.abs(changed[0, t + 1:] - base[0, t + 1:]).max() > 0, "the future did not change"
    leak = np.abs(changed[0, :t + 1] - base[0, :t + 1]).max()
    assert leak <= 1e-6, f"{name}: changing inputs after {t} moves outputs <= {t} by {leak:.2g}"


@pytest.mark.parametrize("name", [n for n in NAMES if "bidirectional" in fields(n)])
def test_bidirectional_sees_both_directions_and_refuses_causal(name):
  mask = jnp.ones((1, LENGTH), bool)
  run_all = forward(make(name, bidirectional=True), mask)
  run = lambda x: run_all(x)[0]
  t = LENGTH // 2
  grad = np.asarray(jax.grad(lambda x: run(x)[0, t].sum())(inputs(batch=1)))
  assert np.abs(grad[0, t + 1:]).max() > 0 and np.abs(grad[0, :t]).max() > 0
  with pytest.raises(ValueError, match="bidirectional"):
    forward(make(name, causal=True, bidirectional=True), mask)(inputs(batch=1))


@pytest.mark.parametrize("name", NAMES)
def test_jit_matches_no_jit(name):
  mixer, mask, x = make(name), padded_mask(), inputs()
  variables = jax.jit(mixer.init)({"params": jax.random.key(0)}, x, mask)
  apply = lambda x: outputs(mixer.apply(variables, x, mask))
  jitted = jax.jit(apply)(x)
  with jax.disable_jit():
    eager = apply(x)
  for eager_out, jitted_out in zip(eager, jitted, strict=True):
    np.testing.assert_allclose(eager_out, jitted_out, atol=1e-5, rtol=1e-5)


def declares_dropout(name):
  return "dropout_rate" in fields(name)


@pytest.mark.parametrize("name", NAMES)
def test_dropout(name):
  """Evaluation is deterministic whatever the rng; where the mixer has dropout of its own
  (declares `dropout_rate`), training with rate 0.5 differs from rate 0 and between rngs;
  without, a nonzero rate is refused at build time."""
  mask, x = padded_mask(), inputs()
  if not declares_dropout(name):
    with pytest.raises(ValueError, match="has no attention dropout"):
      make(name, dropout_rate=0.5)
    return
  on, off = make(name, dropout_rate=0.5), make(name, dropout_rate=0.0)
  variables = jax.jit(off.init)({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x,
                                mask)
  applies = {(id(mixer), det): jax.jit(lambda rng, mixer=mixer, det=det: outputs(mixer.apply(
      variables, x, mask, deterministic=det, rngs={"dropout": rng}))[0])
             for mixer in (on, off) for det in (True, False)}
  run = lambda mixer, seed, det: np.asarray(applies[id(mixer), det](jax.random.key(seed)))
  np.testing.assert_array_equal(run(on, 1, True), run(on, 2, True))
  np.testing.assert_array_equal(run(on, 1, False), run(on, 1, False))
  # Mega's attention branch is small at init (projections of std 0.02): a dropout change of
  # 1e-4 there is real, far above the 1e-7 rounding between two compiled forms.
  assert np.abs(run(on, 1, False) - run(off, 1, False)).max() > 1e-5
  assert np.abs(run(on, 1, False) - run(on, 2, False)).max() > 1e-5


# Mixers whose causal form is a different code path (Mega: a causal attention mask and the EMA
# as a scan); for the others `causal` only refuses `bidirectional`, so their causal builds run
# with the first option entry only.
CAUSAL_PATHS = {"mega"}


def bfloat16_cases():
  for name in NAMES:
    for number, options in enumerate(OPTION_MATRIX.get(name, [{}])):
      for causal in (False, True):
        if causal and (options.get("bidirectional") or (number and name not in CAUSAL_PATHS)
                       or not registry.get(name).supports_causal):
          continue
        label = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        yield pytest.param(name, options, causal,
                           id=f"{name}-{label}-{'causal' if causal else 'noncausal'}")


@pytest.mark.parametrize("name,options,causal", list(bfloat16_cases()))
def test_bfloat16_training_and_evaluation(name, options, causal):
  """bfloat16 in, bfloat16 out, finite outputs and gradients, dropout on where it exists."""
  x, mask = inputs(3, dtype=jnp.bfloat16), padded_mask()
  mixer = make(name, causal=causal, dropout_rate=0.1 if declares_dropout(name) else 0.0,
               **options)
  key = functools.partial(jax.random.key, impl="rbg")   # fast compiles (see test_attention.py)

  @jax.jit
  def train_and_eval(x):
    variables = mixer.init({"params": key(0), "dropout": key(1)}, x, mask)

    def loss(params, x):
      outs = outputs(mixer.apply({**variables, "params": params}, x, mask, deterministic=False,
                                 rngs={"dropout": key(2)}))
      return sum(out.astype(jnp.float32).sum() for out in outs), outs

    (_, train_outs), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables.get("params", {}), x)  # FNet has no parameters
    return train_outs, outputs(mixer.apply(variables, x, mask)), grads

  train_outs, eval_outs, (param_grads, x_grad) = train_and_eval(x)
  for which, outs in (("training", train_outs), ("evaluation", eval_outs)):
    for out in outs:
      assert out.dtype == jnp.bfloat16, f"{which} output is {out.dtype}"
      assert bool(jnp.all(jnp.isfinite(out.astype(jnp.float32)))), f"{which} output not finite"
  assert x_grad.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(x_grad.astype(jnp.float32))))
  for path, grad in jax.tree_util.tree_leaves_with_path(param_grads):
    assert grad.dtype == jnp.float32, f"{jax.tree_util.keystr(path)} is {grad.dtype}"
    assert bool(jnp.all(jnp.isfinite(grad))), f"gradient of {jax.tree_util.keystr(path)}"


def compiled_memory(name, length):
  """Bytes XLA plans for forward+backward of the mixer at `length` (compile only)."""
  mixer = registry.build_mixer(name, MEMORY_KWARGS.get(name, {}), max_len=length)
  x = jax.ShapeDtypeStruct((1, length, FEATURES), jnp.float32)
  mask = jax.ShapeDtypeStruct((1, length), jnp.bool_)
  variables = jax.eval_shape(mixer.init, jax.random.key(0), x, mask)
  loss = lambda variables, x, mask: sum(out.sum() for out in outputs(mixer.apply(variables, x,
                                                                                 mask)))
  stats = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, x, mask).compile()
  stats = stats.memory_analysis()
  return stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get(n).subquadratic])
def test_memory_grows_subquadratically(name):
  ratio = compiled_memory(name, 8192) / compiled_memory(name, 4096)
  assert ratio <= 2.5, f"{name}: memory grows {ratio:.2f}x from 4096 to 8192"


class _Projections(nn.Module):
  name_: str

  @nn.compact
  def __call__(self, x, mask):
    return MultiHeadAttention(num_heads=HEADS, qkv_dim=FEATURES, attention=self.name_,
                              attention_kwargs=SMALL_KWARGS.get(self.name_, {}),
                              max_len=LENGTH, name="attention")(x, mask)


@pytest.mark.parametrize("name", NAMES)
def test_the_shared_base_calls_a_sequence_mixer_without_projections(name):
  x, mask = inputs(), padded_mask()
  module, mixer = _Projections(name), make(name)

  @jax.jit
  def through_the_base_and_direct(x):
    variables = module.init(jax.random.key(0), x, mask)
    inner = {k: v["attention"]["mixer"] for k, v in variables.items()}
    return (variables, outputs(module.apply(variables, x, mask)),
            outputs(mixer.apply(inner, x, mask)))

  variables, outs, directs = through_the_base_and_direct(x)
  # No query/key/value/out: only the mixer's own parameters (FNet has none at all).
  assert set(variables.get("params", {}).get("attention", {"mixer": None})) == {"mixer"}
  for out, direct in zip(outs, directs, strict=True):
    np.testing.assert_allclose(out, direct, atol=1e-6, rtol=1e-6)
  with pytest.raises(ValueError, match="sequence mixer"):
    MultiHeadAttention(num_heads=HEADS, qkv_dim=FEATURES, attention=name, max_len=LENGTH,
                       attention_kwargs=SMALL_KWARGS.get(name, {}), out_dim=FEATURES + 1).init(
                           jax.random.key(0), x, mask)
  with pytest.raises(ValueError, match="does not support cross attention"):
    MultiHeadAttention(num_heads=HEADS, qkv_dim=FEATURES, attention=name, cross=True,
                       max_len=LENGTH, attention_kwargs=SMALL_KWARGS.get(name, {})).init(
                           jax.random.key(0), x, mask)


def test_the_registry_kinds():
  assert set(registry.names(kind="qkv")) | set(NAMES) == set(registry.names())
  assert not set(registry.names(kind="qkv")) & set(NAMES)
  with pytest.raises(ValueError, match="kind='conv'"):
    registry.names(kind="conv")
  with pytest.raises(ValueError, match="kind='conv'; expected one of"):
    registry.register("x_conv", causal=False, cross=False, kind="conv")
  with pytest.raises(ValueError, match="no cross form"):
    registry.register("x_seq", causal=False, cross=True, kind="sequence")
