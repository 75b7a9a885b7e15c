"""Incremental decoding through the whole model (models/generate.py): for every variant that
decodes, feeding the tokens one at a time through the cache gives the full forward pass's
logits (1e-4, float32); the cache of the constant-state kinds does not grow with the number of
tokens, a windowed one stops at its window; the rest say at build time why they cannot."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import generate
from models.attention import registry
from tests.test_decoder import VOCAB, lm, lm_batch, pair_batch, seq2seq, tokens

CAUSAL = [n for n in registry.names() if registry.get(n).supports_causal]
DECODES = [n for n in CAUSAL if registry.get(n).decode]
CANNOT = [n for n in CAUSAL if not registry.get(n).decode]
LENGTH = 12


def full_and_stepped(model, inputs):
  variables = model.init(jax.random.key(0), lm_batch(inputs))
  full = jax.jit(lambda p, x: model.apply({"params": p}, lm_batch(x))[0])(
      variables["params"], inputs)
  stepped = jax.jit(lambda p, x: generate.teacher_forced_logits(model, p, x))(
      variables["params"], inputs)
  return np.asarray(full), np.asarray(stepped), variables["params"]


@pytest.mark.parametrize("name", DECODES)
def test_step_by_step_decoding_equals_the_full_forward(name):
  full, stepped, _ = full_and_stepped(lm(name), tokens(0))
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("options", [
    {"rope": True, "num_kv_heads": 1},
    {"score_bias": "alibi", "positions": "none"},
    {"score_bias": "t5", "qk_norm": True, "positions": "learned"}])
def test_decoding_with_head_and_position_options(options):
  full, stepped, _ = full_and_stepped(lm("transformer", **options), tokens(0))
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)


def cache_bytes(name, length):
  model = lm(name)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), lm_batch(tokens(0))))["params"]
  cache = jax.eval_shape(lambda p: generate.init_cache(model, p, 2, length), params)
  return generate.cache_bytes(cache)


@pytest.mark.parametrize("name", [n for n in DECODES
                                  if registry.get(n).decode in ("state", "recurrent", "window")])
def test_constant_and_windowed_caches_do_not_grow_with_the_tokens(name):
  # LENGTH is the model's max_len: the longest decode; 12 -> 4 keeps every window filled at 4
  # for the small settings, so a windowed cache is the same size at both.
  small, large = cache_bytes(name, 4), cache_bytes(name, LENGTH)
  assert small == large, f"{name}: cache {small} bytes for 4 tokens, {large} for {LENGTH}"


def test_a_kv_cache_grows_with_the_tokens_and_mqa_keeps_one_head():
  assert cache_bytes("transformer", LENGTH) > 2 * cache_bytes("transformer", 4)
  model = lm("transformer", num_kv_heads=1)
  params = model.init(jax.random.key(0), lm_batch(tokens(0)))["params"]
  one_head = generate.cache_bytes(generate.init_cache(model, params, 2, LENGTH))
  assert one_head < 0.6 * cache_bytes("transformer", LENGTH)  # 1 of 2 heads


@pytest.mark.parametrize("name", CANNOT)
def test_variants_that_cannot_decode_say_why_at_build_time(name):
  spec = registry.get(name)
  assert spec.decode_caveat, f"{name}: causal, no decode and no decode_caveat"
  model = lm(name)
  params = model.init(jax.random.key(0), lm_batch(tokens(0)))["params"]
  with pytest.raises(ValueError, match=f"attention {name!r} cannot decode incrementally"):
    generate.init_cache(model, params, 2, LENGTH)


def test_greedy_generation_continues_the_prompt_with_the_full_forwards_argmax():
  model = lm("transformer")
  prompt = tokens(0)[:, :4]
  params = model.init(jax.random.key(0), lm_batch(tokens(0)))["params"]
  out = np.asarray(jax.jit(lambda p: generate.generate(model, p, prompt, 8))(params))
  np.testing.assert_array_equal(out[:, :4], prompt)
  logits, _ = model.apply({"params": params}, lm_batch(jnp.asarray(out)))
  np.testing.assert_array_equal(out[:, 4:], np.asarray(logits).argmax(-1)[:, 3:-1])
  sampled = generate.generate(model, params, prompt, 8, temperature=1.0, rng=jax.random.key(3))
  assert sampled.shape == (2, 12) and (np.asarray(sampled)[:, 4:] != out[:, 4:]).any()
  with pytest.raises(ValueError, match="must fit"):
    generate.generate(model, params, prompt, 9, length=12)


def test_encoder_decoder_decodes_step_by_step():
  model = seq2seq()
  source, target = tokens(0), tokens(1, length=7)
  batch = pair_batch(source, target, 9)
  params = model.init(jax.random.key(0), batch)["params"]
  full, _ = model.apply({"params": params}, batch)
  context = generate.encode(model, params, batch["inputs"], batch["mask"])
  stepped = generate.teacher_forced_logits(model, params, target, context)
  np.testing.assert_allclose(stepped, full, atol=1e-4, rtol=1e-4)
  assert VOCAB == full.shape[-1]
