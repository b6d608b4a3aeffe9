"""Anti-aliased downsampling against a PyTorch twin of the reference's AntiAliasInterpolation2d;
the per-image Gaussian blur and the shared taps against scipy."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from torch_oracles import torch_antialias

from mmfa_jax.ops import antialias_downsample, antialias_kernel, image_pyramid
from mmfa_jax.ops.pyramid import gaussian_blur, gaussian_taps


@pytest.mark.parametrize(("scale", "size", "stride"), [(0.5, 5, 2), (0.25, 13, 4), (0.125, 29, 8)])
def test_kernel_table(scale, size, stride):
  kernel = antialias_kernel(scale)
  assert kernel.shape == (size, size)
  np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(kernel, kernel.T)
  np.testing.assert_allclose(kernel, kernel[::-1, ::-1])
  assert kernel.argmax() == (size * size) // 2
  assert int(1 / scale) == stride


@pytest.mark.parametrize("scale", [0.5, 0.25, 0.125, 1 / 3])
@pytest.mark.parametrize("size", [64, 37])
def test_matches_torch(scale, size):
  images = np.random.default_rng(0).random((2, size, size + 3, 3), dtype=np.float32)
  expected = torch_antialias(images, scale)
  got = np.asarray(antialias_downsample(images, scale))
  assert got.shape == expected.shape
  step = int(1 / scale)
  assert got.shape[1:3] == (math.ceil(size / step), math.ceil((size + 3) / step))
  np.testing.assert_allclose(got, expected, atol=1e-6)


def test_zero_padding_darkens_borders_and_pyramid_shapes():
  white = np.ones((1, 256, 256, 3), np.float32)
  pyramid = image_pyramid(white, (1, 0.5, 0.25, 0.125))
  assert list(pyramid) == [1.0, 0.5, 0.25, 0.125]
  assert [p.shape[1] for p in pyramid.values()] == [256, 128, 64, 32]
  assert pyramid[1.0] is white
  quarter = np.asarray(pyramid[0.25])
  np.testing.assert_allclose(quarter[0, 8, 8], 1.0, atol=1e-6)  # interior stays white
  # Corner: the 13x13 kernel centred on pixel (0, 0) sees 7 of 13 taps per axis.
  kernel_1d = antialias_kernel(0.25).sum(0)
  np.testing.assert_allclose(quarter[0, 0, 0, 0], kernel_1d[6:].sum() ** 2, rtol=1e-5)
  assert quarter[0, 0, 0, 0] < 0.8


def test_bad_scale():
  with pytest.raises(ValueError, match="0 < scale < 1"):
    antialias_kernel(2.0)


def test_gaussian_blur_equals_scipy_and_sigma_zero_is_the_identity():
  images = np.random.default_rng(0).uniform(size=(3, 12, 10, 2)).astype(np.float32)
  sigmas = np.array([0.0, 0.7, 1.0], np.float32)
  got = np.asarray(gaussian_blur(jnp.asarray(images), jnp.asarray(sigmas)))
  np.testing.assert_array_equal(got[0], images[0])
  for i in (1, 2):
    # radius 3 pixels: scipy's truncate is radius / sigma; replicated edges are its "nearest".
    want = ndimage.gaussian_filter(
      images[i], (sigmas[i], sigmas[i], 0), mode="nearest", truncate=3 / sigmas[i]
    )
    np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_gaussian_taps_in_numpy_and_jax_agree_with_scipys_kernel():
  """scipy.ndimage.gaussian_filter1d of a unit impulse is its kernel; a batch of JAX sigmas gives
  the same taps (float32), sigma 0 the identity tap."""
  impulse = np.zeros(9)
  impulse[4] = 1
  want = ndimage.gaussian_filter1d(impulse, 1.3, truncate=4 / 1.3, mode="constant")
  np.testing.assert_allclose(gaussian_taps(1.3, 4), want, atol=1e-12)
  batch = np.asarray(gaussian_taps(jnp.asarray([1.3, 0.0]), 4))  # (2, 9)
  np.testing.assert_allclose(batch[0], want, atol=1e-6)
  np.testing.assert_array_equal(batch[1], impulse)
