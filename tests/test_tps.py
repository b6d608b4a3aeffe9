"""Random TPS warps: coordinates by hand, images against torch, and keypoint/image agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch_oracles import to_channels_first, to_channels_last, tps_warp_image_t

from mmfa_jax.ops import (
  TPSTransform,
  make_coordinate_grid,
  sample_tps_transform,
  warp_coordinates,
  warp_image,
)


def _transform(affine, weights, points_tps=5):
  control = make_coordinate_grid((points_tps, points_tps)).reshape(-1, 2)
  return TPSTransform(jnp.asarray(affine, jnp.float32), control, jnp.asarray(weights, jnp.float32))


def test_sampled_shapes_and_statistics():
  transform = sample_tps_transform(jax.random.key(0), 4000, sigma_affine=0.05, sigma_tps=0.005)
  assert transform.affine.shape == (4000, 2, 3)
  assert transform.control_points.shape == (25, 2)
  assert transform.control_weights.shape == (4000, 25)
  np.testing.assert_allclose(np.std(transform.affine - np.eye(2, 3)), 0.05, rtol=0.02)
  np.testing.assert_allclose(np.std(transform.control_weights), 0.005, rtol=0.02)
  # Control points: (x, y) with x fastest over [-1, 1].
  np.testing.assert_allclose(transform.control_points[:3], [[-1, -1], [-0.5, -1], [0, -1]])


def test_warp_coordinates_hand_case():
  affine = np.array([[[0.9, -0.1, 0.05], [0.2, 1.1, -0.1]]], np.float32)
  weights = np.zeros((1, 25), np.float32)
  weights[0, 12] = 0.3  # control point (0, 0)
  transform = _transform(affine, weights)
  points = np.array([[[0.0, 0.0], [0.5, -0.25], [1.0, 1.0]]], np.float32)
  got = np.asarray(warp_coordinates(transform, points))
  for n, p in enumerate(points[0]):
    r = np.abs(p).sum()  # L1 distance to (0, 0)
    spline = 0.3 * r**2 * np.log(r + 1e-6)  # one scalar added to x and y
    want = affine[0, :, :2] @ p + affine[0, :, 2] + spline
    np.testing.assert_allclose(got[0, n], want, atol=1e-6)
  # Shared (N, 2) points broadcast over the batch.
  np.testing.assert_allclose(warp_coordinates(transform, points[0]), got, atol=1e-7)


def test_warp_image_matches_torch_reference_steps():
  rng = np.random.default_rng(1)
  transform = sample_tps_transform(jax.random.key(3), 2, sigma_affine=0.2, sigma_tps=0.05)
  images = rng.random((2, 24, 20, 3), dtype=np.float32)
  expected = tps_warp_image_t(
    torch.from_numpy(np.array(transform.affine)),
    torch.from_numpy(np.array(transform.control_points)),
    torch.from_numpy(np.array(transform.control_weights)),
    to_channels_first(images),
  )
  np.testing.assert_allclose(warp_image(transform, images), to_channels_last(expected), atol=1e-5)


def test_warped_keypoints_and_warped_image_agree():
  """A dot found in the warped image, mapped through T, lands where the dot is in the original."""
  size = 96
  affine = np.array([[[0.95, -0.17, 0.12], [0.17, 0.95, -0.08]]], np.float32)  # ~10 deg + shift
  weights = np.zeros((1, 25), np.float32)
  weights[0, [6, 12, 18]] = [0.04, -0.05, 0.03]
  transform = _transform(affine, weights)
  pixel_grid = np.asarray(make_coordinate_grid((size, size)))  # (H, W, 2) output locations
  for q in np.array([[0.3, -0.4], [-0.5, 0.2], [0.1, 0.45]], np.float32):
    # Render a small dot centred on q in the original image (align_corners=False pixel mapping).
    centre = ((q + 1) * size - 1) / 2  # (x, y) in pixels
    ys, xs = np.mgrid[0:size, 0:size]
    dot = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * 1.2**2))
    image = dot[None, :, :, None].astype(np.float32)
    warped = np.asarray(warp_image(transform, image))[0, :, :, 0]
    # Keypoint in the warped image as a heat-weighted average over the [-1, 1] grid (as KPDetector).
    heat = warped**4
    found = (heat[..., None] * pixel_grid).sum((0, 1)) / heat.sum()
    mapped = np.asarray(warp_coordinates(transform, found[None, None]))[0, 0]
    np.testing.assert_allclose(mapped, q, atol=0.01)  # within half a pixel at 96 px
    assert np.abs(found - q).max() > 0.05  # the warp moved the dot by several pixels


def test_similarity_transform_is_rotation_scale_shift_within_ranges():
  from mmfa_jax.ops import sample_similarity_transform

  transform = sample_similarity_transform(
    jax.random.key(1), 2000, max_rotation=15.0, scale_range=(0.9, 1.1), max_translation=0.1
  )
  affine = np.asarray(transform.affine, np.float64)  # (B, 2, 3)
  linear, shift = affine[:, :, :2], affine[:, :, 2]
  scale = np.sqrt(np.linalg.det(linear))
  angle = np.degrees(np.arctan2(linear[:, 1, 0], linear[:, 0, 0]))
  # Similarity: linear part = scale * [[cos, -sin], [sin, cos]].
  np.testing.assert_allclose(linear[:, 0, 0], linear[:, 1, 1], atol=1e-6)
  np.testing.assert_allclose(linear[:, 0, 1], -linear[:, 1, 0], atol=1e-6)
  assert angle.min() >= -15 and angle.max() <= 15 and angle.max() - angle.min() > 29
  assert scale.min() >= 0.9 - 1e-6 and scale.max() <= 1.1 + 1e-6
  assert np.abs(shift).max() <= 0.1 + 1e-7 and np.abs(shift).max() > 0.099
  # A point set keeps its shape: distances scale by `scale`, (x, y) rotate by `angle` degrees.
  points = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, -0.5]], np.float32)
  warped = np.asarray(warp_coordinates(transform, points), np.float64)  # (B, 3, 2)
  np.testing.assert_allclose(warped[:, 0], shift, atol=1e-6)
  first = warped[:, 1] - warped[:, 0]
  np.testing.assert_allclose(np.linalg.norm(first, axis=-1), 0.5 * scale, atol=1e-6)
  np.testing.assert_allclose(np.degrees(np.arctan2(first[:, 1], first[:, 0])), angle, atol=1e-4)


def test_similarity_transform_warps_images_like_the_reference():
  from mmfa_jax.ops import sample_similarity_transform

  # The augmentation A of the representation loss uses the reference's frame warp (reflection,
  # align_corners=False, so even the identity warp shrinks the grid by (size-1)/size).
  transform = sample_similarity_transform(
    jax.random.key(2), 3, max_rotation=30.0, scale_range=(0.8, 1.2), max_translation=0.2
  )
  images = np.asarray(jax.random.uniform(jax.random.key(3), (3, 12, 16, 3)))
  got = np.asarray(warp_image(transform, jnp.asarray(images)))
  expected = tps_warp_image_t(
    torch.from_numpy(np.asarray(transform.affine)),
    torch.from_numpy(np.asarray(transform.control_points)),
    torch.from_numpy(np.asarray(transform.control_weights)),
    to_channels_first(images),
  )
  np.testing.assert_allclose(got, to_channels_last(expected), atol=1e-5)
