"""FNet: Re(fft2) without padding; with padding, each example's fft2 over its own real length
(Bluestein's chirp-z DFT); padding appended or changed leaves real outputs alone; bfloat16;
the registry flags.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models.attention import registry
from models.attention.fnet import bluestein_dft, fourier_mix

mix = jax.jit(fourier_mix)


def inputs(seed, batch=2, length=16, features=8):
  return np.random.default_rng(seed).standard_normal((batch, length, features)).astype(np.float32)


def test_without_padding_is_the_real_part_of_fft2():
  x = inputs(0)
  want = np.real(np.fft.fft2(x, axes=(1, 2)))
  np.testing.assert_allclose(mix(x), want, atol=1e-4, rtol=0)
  full = np.ones(x.shape[:2], bool)   # the mask path (Bluestein with n = L) agrees
  np.testing.assert_allclose(mix(x, full), want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("length", [1, 7, 16, 29])
def test_bluestein_is_the_dft_of_each_real_length(length):
  rng = np.random.default_rng(length)
  x = (rng.standard_normal((3, length, 4)) + 1j * rng.standard_normal((3, length, 4)))
  n = np.array([length, max(length - 3, 1), 1])
  x = np.where(np.arange(length)[None, :, None] < n[:, None, None], x, 0.0).astype(np.complex64)
  out = np.asarray(jax.jit(bluestein_dft)(x, n))
  for b, nb in enumerate(n):
    np.testing.assert_allclose(out[b, :nb], np.fft.fft(x[b, :nb], axis=0), atol=1e-4, rtol=0)


def test_padded_example_is_the_fft2_of_its_real_part_and_padding_is_invisible():
  x = inputs(1, length=24)
  valid = np.array([13, 24])
  mask = np.arange(24)[None, :] < valid[:, None]
  out = np.asarray(mix(x, mask))
  for b, n in enumerate(valid):
    np.testing.assert_allclose(out[b, :n], np.real(np.fft.fft2(x[b, :n])), atol=1e-4, rtol=0)
  assert np.abs(out[0, 13:]).max() == 0.0
  # Changed padding, and less padding (the same example in a shorter batch), change nothing.
  noisy = np.where(mask[..., None], x, 100.0 * inputs(2, length=24))
  np.testing.assert_allclose(mix(noisy, mask), out, atol=1e-5, rtol=0)
  short = np.asarray(mix(x[:1, :16], mask[:1, :16]))
  np.testing.assert_allclose(short[0, :13], out[0, :13], atol=1e-4, rtol=0)


def test_bfloat16_in_bfloat16_out_and_the_module_has_no_parameters():
  x = jnp.asarray(inputs(3)).astype(jnp.bfloat16)
  mask = np.arange(16)[None, :] < np.array([[11], [16]])
  mixer = registry.build_mixer("fnet", {})
  variables = mixer.init(jax.random.key(0), x, mask)
  assert not jax.tree_util.tree_leaves(variables)
  out = mixer.apply(variables, x, mask)
  assert out.dtype == jnp.bfloat16
  want = np.real(np.fft.fft2(np.asarray(x[1], np.float32)))
  np.testing.assert_allclose(np.asarray(out[1], np.float32), want, atol=0.05 * np.abs(want).max())


def test_flags_and_refusals():
  spec = registry.get("fnet")
  assert spec.kind == "sequence" and not spec.supports_causal and not spec.supports_cross
  assert not spec.rope and not spec.kv_heads
  with pytest.raises(ValueError, match="no causal form"):
    registry.build_mixer("fnet", {}, causal=True)
  with pytest.raises(ValueError, match="has no attention dropout"):
    registry.build_mixer("fnet", {}, dropout_rate=0.1)
