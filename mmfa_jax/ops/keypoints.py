"""Keypoint transforms, inference-time motion helpers, heatmaps and sparse motions.

Keypoints are ``(B, K, 3)`` arrays of ``(x, y, z)`` in the normalised [-1, 1] space of
``make_coordinate_grid`` (x along width, y along height, z along the depth slices). Rotations are
``(B, 3, 3)`` matrices acting on column vectors (see ``ops.rotation``), translations ``(B, 3)``,
scales ``(B,)`` (or ``(B, 1)``), expression deformations ``(B, K, 3)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.ops.grid_sample import make_coordinate_grid

DeformationFrame = Literal["canonical", "posed"]


def _rotate(rotation: jax.Array, points: jax.Array) -> jax.Array:
  """(B, 3, 3) rotations applied to (B, K, 3) column-vector points."""
  return jnp.einsum("bij,bkj->bki", rotation, points)


def mmfa_keypoints(
  canonical_kp: jax.Array,
  rotation: jax.Array,
  translation: jax.Array,
  scale: jax.Array,
  expression_deformation: jax.Array,
  *,
  deformation_frame: DeformationFrame = "canonical",
) -> jax.Array:
  """MMFA's keypoints under scaled orthographic projection (mmfa_delta.md 1).

  ``deformation_frame='canonical'`` (default): ``s * R (x_c + delta) + t``, the expression lives in
  the canonical frame and is rotated and scaled with the face. ``'posed'`` (LivePortrait's form):
  ``s * (R x_c + delta) + t``.

  Returns ``(B, K, 3)``.
  """
  scale = jnp.reshape(scale, (scale.shape[0], 1, 1))  # (B, 1, 1)
  if deformation_frame == "canonical":
    posed = _rotate(rotation, canonical_kp + expression_deformation)
  elif deformation_frame == "posed":
    posed = _rotate(rotation, canonical_kp) + expression_deformation
  else:
    raise ValueError(f"deformation_frame must be 'canonical' or 'posed', got {deformation_frame!r}")
  return scale * posed + translation[:, None, :]


def face_vid2vid_keypoints(
  canonical_kp: jax.Array,
  rotation: jax.Array,
  translation: jax.Array,
  expression_deformation: jax.Array,
) -> jax.Array:
  """The reference's keypoints, ``R x_c + t + delta`` (architecture.md 6.3). Returns (B, K, 3)."""
  return _rotate(rotation, canonical_kp) + translation[:, None, :] + expression_deformation


def relative_keypoints(
  kp_source: jax.Array,
  kp_driving: jax.Array,
  kp_driving_initial: jax.Array,
  movement_scale: float | jax.Array = 1.0,
) -> jax.Array:
  """``kp_source + (kp_driving - kp_driving_initial) * movement_scale`` (demo.py --relative).

  ``movement_scale`` is a scalar or ``(B,)`` array (see ``adapt_movement_scale``).
  """
  movement_scale = jnp.asarray(movement_scale, kp_source.dtype)
  if movement_scale.ndim == 1:
    movement_scale = movement_scale[:, None, None]
  return kp_source + (kp_driving - kp_driving_initial) * movement_scale


def adapt_movement_scale(
  kp_source: np.ndarray | jax.Array,
  kp_driving_initial: np.ndarray | jax.Array,
  *,
  exponent: float = 0.5,
) -> np.ndarray:
  """Per-sample movement scale from convex-hull volumes (demo.py --adapt_scale), on the host.

  Returns ``(B,)`` float32: ``volume(hull(kp_source)) ** exponent /
  volume(hull(kp_driving_initial)) ** exponent`` over the 3D keypoints. The reference uses
  ``exponent=0.5`` on a 3D volume (only for batch item 0); 1/3 would be dimensionally consistent.
  """
  from scipy.spatial import ConvexHull  # scipy is a jax dependency; imported here, used rarely

  source = np.asarray(kp_source, np.float64)
  initial = np.asarray(kp_driving_initial, np.float64)
  if source.shape != initial.shape or source.ndim != 3 or source.shape[-1] != 3:
    raise ValueError(f"want two (B, K, 3) keypoint arrays, got {source.shape} and {initial.shape}")
  if source.shape[1] < 4:
    raise ValueError(
      f"adapt-scale needs at least 4 keypoints (a 3D convex hull); this model has {source.shape[1]}"
    )
  scales = [
    ConvexHull(src).volume ** exponent / ConvexHull(ini).volume ** exponent
    for src, ini in zip(source, initial)
  ]
  return np.asarray(scales, np.float32)


def soft_argmax(logits: jax.Array, grid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Keypoints as heatmap-weighted means of grid coordinates (a differentiable argmax).

  Args:
    logits: ``(B, *S, K)``, one map per keypoint (temperature already applied).
    grid: ``(*S, n)``, the coordinates of each position.

  Returns:
    ``(keypoints (B, K, n), heatmaps (B, *S, K))``: the softmax of each map over its positions
    and the expected coordinates under it.
  """
  batch, num_kp = logits.shape[0], logits.shape[-1]
  flat = logits.reshape(batch, -1, num_kp)  # (B, prod(S), K)
  heatmap = jax.nn.softmax(flat, axis=1)
  keypoints = jnp.einsum("bsk,sc->bkc", heatmap, grid.reshape(-1, grid.shape[-1]))  # (B, K, n)
  return keypoints, heatmap.reshape(logits.shape)


def heatmap_spread(heatmap: jax.Array, grid: jax.Array) -> jax.Array:
  """The spread of each map: the root of the per-axis variance of the grid coordinates under it,
  averaged over the axes (a zoom by k multiplies it by k; a uniform map over a disk of radius r
  gives r / 2).

  Args:
    heatmap: ``(B, *S, K)``, each map non-negative and summing to 1 over its positions.
    grid: ``(*S, n)``, the coordinates of each position.

  Returns:
    ``(B, K)`` in the grid's units.
  """
  batch, num_kp = heatmap.shape[0], heatmap.shape[-1]
  flat = heatmap.reshape(batch, -1, num_kp)  # (B, P, K)
  coords = grid.reshape(-1, grid.shape[-1])  # (P, n)
  mean = jnp.einsum("bpk,pc->bkc", flat, coords)  # (B, K, n)
  second = jnp.einsum("bpk,pc->bkc", flat, coords**2)  # (B, K, n)
  variance = jnp.maximum(second - mean**2, 0.0).mean(axis=-1)  # (B, K)
  return jnp.sqrt(variance + 1e-12)


def gaussian_heatmaps(
  keypoints: jax.Array, spatial_shape: Sequence[int], variance: float = 0.01
) -> jax.Array:
  """Isotropic Gaussians ``exp(-0.5 |grid - kp|^2 / variance)`` on a [-1, 1] grid.

  Args:
    keypoints: ``(B, K, n)`` with n = len(spatial_shape), (x, y[, z]).
    spatial_shape: ``(H, W)`` or ``(D, H, W)``.
    variance: in normalised units squared (isotropic in [-1, 1] coordinates, so anisotropic in
      voxels when the axes have different lengths).

  Returns:
    ``(B, *spatial_shape, K)``, peak value 1 at each keypoint.
  """
  grid = make_coordinate_grid(spatial_shape, keypoints.dtype)  # (*S, n)
  num_spatial = len(spatial_shape)
  centred = grid[None, ..., None, :] - keypoints.reshape(
    keypoints.shape[0], *([1] * num_spatial), keypoints.shape[1], keypoints.shape[2]
  )  # (B, *S, K, n)
  return jnp.exp(-0.5 * jnp.sum(centred**2, axis=-1) / variance)


def heatmap_representation(
  kp_source: jax.Array,
  kp_driving: jax.Array,
  spatial_shape: Sequence[int],
  variance: float = 0.01,
) -> jax.Array:
  """Driving-minus-source heatmaps with a zero background slot first (architecture.md 7.2 step 4).

  Returns ``(B, *spatial_shape, K + 1)``; slot 0 is the background (all zeros), slot k the
  difference of the Gaussians of driving and source keypoint k - 1.
  """
  difference = gaussian_heatmaps(kp_driving, spatial_shape, variance) - gaussian_heatmaps(
    kp_source, spatial_shape, variance
  )  # (B, *S, K)
  background = jnp.zeros_like(difference[..., :1])
  return jnp.concatenate([background, difference], axis=-1)


def sparse_motions(
  kp_source: jax.Array, kp_driving: jax.Array, spatial_shape: Sequence[int]
) -> jax.Array:
  """Per-slot sampling grids from driving to source (architecture.md 7.2 step 2).

  Slot 0 is the identity grid (background); slot k is ``grid - kp_driving[k-1] + kp_source[k-1]``,
  a pure translation that moves driving keypoint k-1 onto source keypoint k-1.

  Returns ``(B, K + 1, *spatial_shape, n)``, last axis (x, y[, z]), ready for ``grid_sample``.
  """
  grid = make_coordinate_grid(spatial_shape, kp_source.dtype)  # (*S, n)
  batch, num_kp, num_coords = kp_source.shape
  ones = [1] * len(spatial_shape)
  driving = kp_driving.reshape(batch, num_kp, *ones, num_coords)  # (B, K, 1.., n)
  source = kp_source.reshape(batch, num_kp, *ones, num_coords)
  keypoint_grids = grid[None, None] - driving + source  # (B, K, *S, n), reference's order
  identity = jnp.broadcast_to(grid[None, None], (batch, 1, *grid.shape))
  return jnp.concatenate([identity, keypoint_grids], axis=1)


def slot_shifts(kp_source: jax.Array, kp_driving: jax.Array) -> jax.Array:
  """The translation of each ``sparse_motions`` slot: ``(B, K + 1, n)``, slot 0 zero (identity),
  slot k ``kp_source[k-1] - kp_driving[k-1]``; slot k's grid is the reference grid plus it."""
  background = jnp.zeros_like(kp_source[:, :1])
  return jnp.concatenate([background, kp_source - kp_driving], axis=1)


def relative_pose(
  source: tuple[jax.Array, jax.Array, jax.Array],
  driving: tuple[jax.Array, jax.Array, jax.Array],
  initial: tuple[jax.Array, jax.Array, jax.Array],
  movement_scale: float | jax.Array = 1.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """MMFA's relative motion (mmfa_delta.md 15): the driver's pose change since its first frame,
  applied to the source's pose.

  Each argument is ``(rotation (B, 3, 3), translation (B, 3), scale (B,))``; ``initial`` is the
  first driving frame's (batch 1 or B). Returns ``R_d R_0^T R_s``, ``t_s + (t_d - t_0) * m`` and
  ``s_s * s_d / s_0`` with ``m = movement_scale`` (scalar or ``(B,)``).
  """
  (r_s, t_s, s_s), (r_d, t_d, s_d), (r_0, t_0, s_0) = source, driving, initial
  movement_scale = jnp.asarray(movement_scale, t_s.dtype)
  if movement_scale.ndim == 1:
    movement_scale = movement_scale[:, None]
  rotation = r_d @ jnp.swapaxes(r_0, -1, -2) @ r_s  # (B, 3, 3)
  translation = t_s + (t_d - t_0) * movement_scale  # (B, 3)
  scale = s_s * s_d / s_0  # (B,)
  return rotation, translation, scale
