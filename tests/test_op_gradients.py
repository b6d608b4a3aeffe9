"""Gradients of every differentiable op in mmfa_jax.ops against torch autograd of its twin.

Each case draws a random cotangent ``c`` and compares d<op(inputs), c>/d(inputs) from ``jax.grad``
with the same derivative from ``torch.autograd`` on the PyTorch twin in ``torch_oracles``.
(grid_sample's and the layers' gradients are tested in their own files.)
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_oracles import (
  antialias_t,
  gaussian_heatmaps_t,
  rotation_matrix_t,
  to_channels_first,
  tps_warp_coordinates_t,
  tps_warp_image_t,
)

from mmfa_jax.ops import (
  TPSTransform,
  antialias_downsample,
  bins_to_degrees,
  gaussian_heatmaps,
  make_coordinate_grid,
  mmfa_keypoints,
  reference_rotation_matrix,
  rotation_matrix,
  sparse_motions,
  warp_coordinates,
  warp_image,
)

RNG = np.random.default_rng(0)


def _torch_grads(fn, *arrays):
  """Gradients of sum(fn(*tensors) * cotangent) where fn returns (output, cotangent)."""
  tensors = [torch.from_numpy(np.array(a)).requires_grad_(True) for a in arrays]
  output, cotangent = fn(*tensors)
  return torch.autograd.grad((output * cotangent).sum(), tensors)


def _assert_grads_close(jax_grads, torch_grads, atol):
  assert len(jax_grads) == len(torch_grads)
  for got, want in zip(jax_grads, torch_grads):
    want = want.numpy()
    assert np.abs(want).max() > 1e-3, "degenerate case: gradient is zero"
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=atol)


def test_bins_to_degrees_gradient():
  logits = RNG.normal(size=(3, 66)).astype(np.float32)
  cotangent = RNG.normal(size=(3,)).astype(np.float32)
  got = jax.grad(lambda x: jnp.sum(bins_to_degrees(x) * cotangent))(logits)

  def twin(x):
    degrees = (torch.softmax(x, -1) * torch.arange(66, dtype=torch.float32)).sum(-1) * 3 - 99
    return degrees, torch.from_numpy(cotangent)

  _assert_grads_close([got], _torch_grads(twin, logits), atol=1e-5)


@pytest.mark.parametrize(
  ("jax_fn", "pi"), [(rotation_matrix, math.pi), (reference_rotation_matrix, 3.14)]
)
def test_rotation_gradient(jax_fn, pi):
  angles = RNG.uniform(-60, 60, size=(3, 4)).astype(np.float32)
  cotangent = RNG.normal(size=(4, 3, 3)).astype(np.float32)
  got = jax.grad(lambda y, p, r: jnp.sum(jax_fn(y, p, r) * cotangent), argnums=(0, 1, 2))(*angles)
  twin = lambda y, p, r: (rotation_matrix_t(y, p, r, pi), torch.from_numpy(cotangent))  # noqa: E731
  _assert_grads_close(got, _torch_grads(twin, *angles), atol=1e-6)


def test_mmfa_keypoints_gradient():
  canonical = RNG.uniform(-1, 1, (2, 5, 3)).astype(np.float32)
  rotation = np.asarray(rotation_matrix(*RNG.uniform(-30, 30, (3, 2))))
  translation = RNG.normal(size=(2, 3)).astype(np.float32)
  scale = RNG.uniform(0.8, 1.2, (2,)).astype(np.float32)
  deformation = RNG.normal(0, 0.1, (2, 5, 3)).astype(np.float32)
  cotangent = RNG.normal(size=(2, 5, 3)).astype(np.float32)
  inputs = (canonical, rotation, translation, scale, deformation)
  got = jax.grad(lambda *a: jnp.sum(mmfa_keypoints(*a) * cotangent), argnums=tuple(range(5)))(
    *inputs
  )

  def twin(xc, rot, t, s, d):
    out = s[:, None, None] * torch.einsum("bij,bkj->bki", rot, xc + d) + t[:, None]
    return out, torch.from_numpy(cotangent)

  _assert_grads_close(got, _torch_grads(twin, *inputs), atol=1e-5)


def test_heatmap_and_sparse_motion_gradients():
  keypoints = RNG.uniform(-0.8, 0.8, (2, 3, 3)).astype(np.float32)
  shape = (4, 8, 8)
  cotangent = RNG.normal(size=(2, *shape, 3)).astype(np.float32)
  got = jax.grad(lambda k: jnp.sum(gaussian_heatmaps(k, shape, 0.05) * cotangent))(keypoints)
  cotangent_t = torch.from_numpy(cotangent).permute(0, 4, 1, 2, 3)
  twin = lambda k: (gaussian_heatmaps_t(k, shape, 0.05), cotangent_t)  # noqa: E731
  _assert_grads_close([got], _torch_grads(twin, keypoints), atol=1e-5)

  # Sparse motions are linear in the keypoints: d/d kp_source = sum of the cotangent over each
  # keypoint's grid, d/d kp_driving its negative.
  motion_cotangent = RNG.normal(size=(2, 4, *shape, 3)).astype(np.float32)
  d_source, d_driving = jax.grad(
    lambda s, d: jnp.sum(sparse_motions(s, d, shape) * motion_cotangent), argnums=(0, 1)
  )(keypoints, keypoints[:, ::-1])
  expected = motion_cotangent[:, 1:].sum(axis=(2, 3, 4))
  np.testing.assert_allclose(d_source, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(d_driving, -expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("scale", [0.5, 0.25])
def test_antialias_gradient(scale):
  images = RNG.random((2, 20, 24, 3), dtype=np.float32)
  out_shape = antialias_downsample(images, scale).shape
  cotangent = RNG.normal(size=out_shape).astype(np.float32)
  got = jax.grad(lambda x: jnp.sum(antialias_downsample(x, scale) * cotangent))(images)
  twin = lambda x: (antialias_t(x.permute(0, 3, 1, 2), scale), to_channels_first(cotangent))  # noqa: E731
  _assert_grads_close([got], _torch_grads(twin, images), atol=1e-5)


def test_tps_gradients():
  affine = (np.eye(2, 3) + RNG.normal(0, 0.1, (2, 2, 3))).astype(np.float32)
  control = np.asarray(make_coordinate_grid((5, 5))).reshape(-1, 2)
  weights = RNG.normal(0, 0.05, (2, 25)).astype(np.float32)
  points = RNG.uniform(-1, 1, (2, 7, 2)).astype(np.float32)
  cotangent = RNG.normal(size=(2, 7, 2)).astype(np.float32)

  def coords_loss(a, w, p):
    return jnp.sum(warp_coordinates(TPSTransform(a, control, w), p) * cotangent)

  got = jax.grad(coords_loss, argnums=(0, 1, 2))(affine, weights, points)
  control_t = torch.from_numpy(control.copy())
  twin = lambda a, w, p: (tps_warp_coordinates_t(a, control_t, w, p), torch.from_numpy(cotangent))  # noqa: E731
  _assert_grads_close(got, _torch_grads(twin, affine, weights, points), atol=1e-5)

  images = RNG.random((2, 12, 10, 3), dtype=np.float32)
  image_cotangent = RNG.normal(size=images.shape).astype(np.float32)

  def image_loss(x, a, w):
    return jnp.sum(warp_image(TPSTransform(a, control, w), x) * image_cotangent)

  got = jax.grad(image_loss, argnums=(0, 1, 2))(images, affine, weights)

  def image_twin(x, a, w):
    warped = tps_warp_image_t(a, control_t, w, x.permute(0, 3, 1, 2))
    return warped.permute(0, 2, 3, 1), torch.from_numpy(image_cotangent)

  _assert_grads_close(got, _torch_grads(image_twin, images, affine, weights), atol=1e-4)
