"""Anti-aliased downsampling against a PyTorch twin of the reference's AntiAliasInterpolation2d."""

import math

import numpy as np
import pytest
from torch_oracles import torch_antialias

from mmfa_jax.ops import antialias_downsample, antialias_kernel, image_pyramid


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
