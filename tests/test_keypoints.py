"""Keypoint transforms, movement helpers, heatmaps and sparse motions against hand cases."""

import numpy as np
import pytest

from mmfa_jax.ops import (
  adapt_movement_scale,
  face_vid2vid_keypoints,
  gaussian_heatmaps,
  grid_sample_3d,
  heatmap_representation,
  heatmap_spread,
  make_coordinate_grid,
  mmfa_keypoints,
  relative_keypoints,
  rotation_matrix,
  sparse_motions,
)


def _random_motion(seed, batch=3, num_kp=5):
  rng = np.random.default_rng(seed)
  canonical = rng.uniform(-0.8, 0.8, (batch, num_kp, 3)).astype(np.float32)
  rotation = np.asarray(rotation_matrix(*rng.uniform(-40, 40, (3, batch))))
  translation = rng.normal(0, 0.1, (batch, 3)).astype(np.float32)
  scale = rng.uniform(0.8, 1.2, (batch,)).astype(np.float32)
  deformation = rng.normal(0, 0.05, (batch, num_kp, 3)).astype(np.float32)
  return canonical, rotation, translation, scale, deformation


def test_mmfa_keypoints_match_per_point_formula():
  canonical, rotation, translation, scale, deformation = _random_motion(0)
  got = np.asarray(mmfa_keypoints(canonical, rotation, translation, scale, deformation))
  got_posed = np.asarray(
    mmfa_keypoints(canonical, rotation, translation, scale, deformation, deformation_frame="posed")
  )
  for b in range(3):
    for k in range(5):
      want = scale[b] * rotation[b] @ (canonical[b, k] + deformation[b, k]) + translation[b]
      np.testing.assert_allclose(got[b, k], want, atol=1e-5)
      want_posed = scale[b] * (rotation[b] @ canonical[b, k] + deformation[b, k]) + translation[b]
      np.testing.assert_allclose(got_posed[b, k], want_posed, atol=1e-5)
  # Scale as (B, 1) is accepted too.
  np.testing.assert_allclose(
    mmfa_keypoints(canonical, rotation, translation, scale[:, None], deformation), got, atol=1e-6
  )
  with pytest.raises(ValueError, match="deformation_frame"):
    mmfa_keypoints(canonical, rotation, translation, scale, deformation, deformation_frame="x")


def test_face_vid2vid_keypoints_and_identity():
  canonical, rotation, translation, _, deformation = _random_motion(1)
  got = np.asarray(face_vid2vid_keypoints(canonical, rotation, translation, deformation))
  for b in range(3):
    want = canonical[b] @ rotation[b].T + translation[b] + deformation[b]
    np.testing.assert_allclose(got[b], want, atol=1e-5)
  identity = np.broadcast_to(np.eye(3, dtype=np.float32), (3, 3, 3))
  zeros_t, zeros_d, ones = np.zeros((3, 3)), np.zeros_like(canonical), np.ones(3)
  np.testing.assert_allclose(
    mmfa_keypoints(canonical, identity, zeros_t, ones, zeros_d), canonical, atol=1e-7
  )


def test_relative_keypoints_hand_case():
  source = np.array([[[0.1, 0.2, 0.3]]], np.float32)
  driving = np.array([[[0.5, 0.5, 0.5]]], np.float32)
  initial = np.array([[[0.4, 0.6, 0.5]]], np.float32)
  np.testing.assert_allclose(
    relative_keypoints(source, driving, initial), [[[0.2, 0.1, 0.3]]], atol=1e-6
  )
  np.testing.assert_allclose(
    relative_keypoints(source, driving, initial, np.array([2.0], np.float32)),
    [[[0.3, 0.0, 0.3]]],
    atol=1e-6,
  )


def test_adapt_movement_scale_hand_volumes():
  cube = np.array(
    [[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32
  )  # volume 1
  tetra = np.array([[0, 0, 0], [3, 0, 0], [0, 2, 0], [0, 0, 1]], np.float32)  # volume 1
  source = np.stack([cube * 2, np.concatenate([tetra, tetra[:4] * 0.5])])  # volumes 8 and 1
  initial = np.stack([cube, np.concatenate([tetra, tetra[:4]]) * 2])  # volumes 1 and 8
  np.testing.assert_allclose(
    adapt_movement_scale(source, initial), [np.sqrt(8), 1 / np.sqrt(8)], rtol=1e-6
  )
  np.testing.assert_allclose(
    adapt_movement_scale(source, initial, exponent=1 / 3), [2.0, 0.5], rtol=1e-6
  )
  with pytest.raises(ValueError, match=r"\(B, K, 3\)"):
    adapt_movement_scale(cube, cube)


def test_gaussian_heatmaps_hand_values():
  keypoints = np.array([[[0.0, -1.0, 1.0], [1.0, 1.0, -1.0]]], np.float32)  # (x, y, z)
  heat = np.asarray(gaussian_heatmaps(keypoints, (3, 5, 5), variance=0.01))
  assert heat.shape == (1, 3, 5, 5, 2)
  # Keypoint 0 sits exactly on voxel (z=2, y=0, x=2); keypoint 1 on (z=0, y=4, x=4).
  np.testing.assert_allclose(heat[0, 2, 0, 2, 0], 1.0)
  np.testing.assert_allclose(heat[0, 0, 4, 4, 1], 1.0)
  # One step in x is 0.5 normalised units: exp(-0.5 * 0.25 / 0.01).
  np.testing.assert_allclose(heat[0, 2, 0, 3, 0], np.exp(-12.5), rtol=1e-5)
  # One step in z is 1.0 unit: anisotropic in voxels, isotropic in normalised space.
  np.testing.assert_allclose(heat[0, 1, 0, 2, 0], np.exp(-50.0), rtol=1e-4)


def test_heatmap_spread_hand_cases():
  grid = np.asarray(make_coordinate_grid((5, 5)))  # x, y in {-1, -0.5, 0, 0.5, 1}
  maps = np.zeros((3, 5, 5, 1), np.float32)
  maps[0, 2, 2] = 1.0  # one position: no spread
  maps[1, 2, [0, 4]] = 0.5  # x = -1 or 1, y = 0: variance 1 in x, 0 in y
  maps[2] = 1.0 / 25  # uniform: variance 0.5 per axis (five values -1 .. 1)
  got = np.asarray(heatmap_spread(maps, grid))
  assert got.shape == (3, 1)
  np.testing.assert_allclose(got[:, 0], [0.0, np.sqrt(0.5), np.sqrt(0.5)], atol=1e-5)


def test_heatmap_spread_grows_with_a_zoom():
  """Gaussian maps of standard deviation 0.1 and 0.2 (a zoom by 2, off centre) on a fine grid: the
  spread is that standard deviation, whatever the centre."""
  grid = np.asarray(make_coordinate_grid((101, 101)))  # (101, 101, 2)
  maps = []
  for sigma, centre in ((0.1, (0.2, -0.3)), (0.2, (-0.1, 0.3))):
    density = np.exp(-0.5 * ((grid - np.array(centre)) ** 2).sum(-1) / sigma**2)
    maps.append(density / density.sum())
  got = np.asarray(heatmap_spread(np.stack(maps)[..., None].astype(np.float32), grid))[:, 0]
  np.testing.assert_allclose(got, [0.1, 0.2], rtol=1e-3)


def test_heatmap_representation_layout():
  rng = np.random.default_rng(3)
  source = rng.uniform(-1, 1, (2, 4, 3)).astype(np.float32)
  driving = rng.uniform(-1, 1, (2, 4, 3)).astype(np.float32)
  rep = np.asarray(heatmap_representation(source, driving, (4, 6, 6)))
  assert rep.shape == (2, 4, 6, 6, 5)
  assert np.all(rep[..., 0] == 0)
  expected = np.asarray(gaussian_heatmaps(driving, (4, 6, 6))) - np.asarray(
    gaussian_heatmaps(source, (4, 6, 6))
  )
  np.testing.assert_allclose(rep[..., 1:], expected, atol=1e-7)


def test_sparse_motions_move_driving_keypoint_onto_source():
  source = np.array([[[0.3, -0.2, 0.4], [-0.5, 0.5, -0.6]]], np.float32)
  driving = np.array([[[-0.1, 0.25, 0.0], [0.2, -0.3, 0.4]]], np.float32)
  shape = (8, 16, 16)
  motions = np.asarray(sparse_motions(source, driving, shape))
  assert motions.shape == (1, 3, *shape, 3)
  grid = np.asarray(make_coordinate_grid(shape))
  np.testing.assert_allclose(motions[0, 0], grid)
  np.testing.assert_allclose(motions[0, 1], grid - driving[0, 0] + source[0, 0], atol=1e-6)
  # Semantics: warping a volume whose blob sits at source keypoint 0 with slot 1 puts the blob at
  # driving keypoint 0 (sampled with align_corners=True so that grid points are voxel centres).
  blob = np.asarray(gaussian_heatmaps(source[:, :1], shape, variance=0.02))  # (1, *S, 1)
  warped = np.asarray(grid_sample_3d(blob, motions[:, 1], align_corners=True))[0, ..., 0]
  centroid = (warped[..., None] * grid).sum((0, 1, 2)) / warped.sum()  # (x, y, z)
  np.testing.assert_allclose(centroid, driving[0, 0], atol=0.02)
  assert np.abs(source[0, 0] - driving[0, 0]).max() > 0.3  # the blob really moved
