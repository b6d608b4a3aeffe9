"""Random affine + thin-plate-spline warps for the equivariance loss (architecture.md 9.2).

A transform T maps normalised 2D points ``p = (x, y)`` in [-1, 1] to
``T(p) = A[:, :2] p + A[:, 2] + sum_c w_c U(|p - c|_1)`` with ``U(r) = r^2 log(r + 1e-6)``, where
``A`` is a 2x3 affine matrix (identity plus Gaussian noise), ``c`` runs over a ``P x P`` grid of
control points on [-1, 1]^2 (``make_coordinate_grid``, so ordered (x, y) with x fastest) and ``w_c``
are Gaussian scalars. As in the reference, the distance is the **L1** distance and the spline term
is one scalar added to both x and y.

``warp_image`` samples the image at ``T(p)`` for every output pixel location ``p`` (bilinear,
reflection padding, align_corners False). Keypoints found in the warped image map back into the
original image with the same forward ``T`` (``warp_coordinates``), so no inverse is needed.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from mmfa_jax.ops.grid_sample import grid_sample_2d, make_coordinate_grid


@flax.struct.dataclass
class TPSTransform:
  """A batch of random warps.

  Attributes:
    affine: ``(B, 2, 3)`` affine part, acting on column vectors (x, y, 1).
    control_points: ``(P * P, 2)`` (x, y) spline centres.
    control_weights: ``(B, P * P)`` spline coefficients (zeros for a purely affine warp).
  """

  affine: jax.Array
  control_points: jax.Array
  control_weights: jax.Array


def sample_tps_transform(
  rng: jax.Array,
  batch_size: int,
  *,
  sigma_affine: float = 0.05,
  sigma_tps: float = 0.005,
  points_tps: int = 5,
) -> TPSTransform:
  """Draws ``batch_size`` random warps (vox-256: sigma_affine 0.05, sigma_tps 0.005, 5 x 5 points)."""
  affine_rng, tps_rng = jax.random.split(rng)
  noise = sigma_affine * jax.random.normal(affine_rng, (batch_size, 2, 3))
  affine = jnp.eye(2, 3)[None] + noise  # (B, 2, 3)
  control_points = make_coordinate_grid((points_tps, points_tps)).reshape(-1, 2)  # (P*P, 2)
  control_weights = sigma_tps * jax.random.normal(tps_rng, (batch_size, points_tps**2))
  return TPSTransform(affine, control_points, control_weights)


def sample_similarity_transform(
  rng: jax.Array,
  batch_size: int,
  *,
  max_rotation: float = 15.0,
  scale_range: tuple[float, float] = (0.9, 1.1),
  max_translation: float = 0.1,
) -> TPSTransform:
  """Random similarity warps (the representation loss's augmentation A, mmfa_delta 8) as a
  ``TPSTransform`` with no spline part: rotation uniform in ``[-max_rotation, max_rotation]``
  degrees, isotropic scale uniform in ``scale_range``, translation uniform in
  ``[-max_translation, max_translation]`` (normalised coordinates, 2 = the image width)."""
  angle_rng, scale_rng, shift_rng = jax.random.split(rng, 3)
  angle = jnp.deg2rad(
    jax.random.uniform(angle_rng, (batch_size,), minval=-max_rotation, maxval=max_rotation)
  )
  scale = jax.random.uniform(scale_rng, (batch_size,), minval=scale_range[0], maxval=scale_range[1])
  shift = jax.random.uniform(
    shift_rng, (batch_size, 2), minval=-max_translation, maxval=max_translation
  )
  cos, sin = scale * jnp.cos(angle), scale * jnp.sin(angle)
  affine = jnp.stack(
    [jnp.stack([cos, -sin, shift[:, 0]], -1), jnp.stack([sin, cos, shift[:, 1]], -1)], axis=1
  )  # (B, 2, 3)
  return TPSTransform(affine, jnp.zeros((1, 2)), jnp.zeros((batch_size, 1)))


def warp_coordinates(transform: TPSTransform, points: jax.Array) -> jax.Array:
  """Applies ``T`` to ``(B, N, 2)`` (x, y) points (or ``(N, 2)``, shared by the batch).

  Returns ``(B, N, 2)``.
  """
  if points.ndim == 2:
    points = jnp.broadcast_to(points[None], (transform.affine.shape[0], *points.shape))
  linear = transform.affine[:, None, :, :2]  # (B, 1, 2, 2)
  offset = transform.affine[:, None, :, 2]  # (B, 1, 2)
  warped = jnp.einsum("bnij,bnj->bni", linear, points) + offset  # (B, N, 2)
  distances = jnp.sum(
    jnp.abs(points[:, :, None, :] - transform.control_points[None, None]), axis=-1
  )  # (B, N, P*P), L1
  radial = distances**2 * jnp.log(distances + 1e-6)
  spline = jnp.sum(radial * transform.control_weights[:, None, :], axis=-1)  # (B, N)
  return warped + spline[..., None]


def warp_image(transform: TPSTransform, images: jax.Array) -> jax.Array:
  """Warped images ``out(p) = images(T(p))``; ``images`` is ``(B, H, W, C)``, output the same."""
  batch, height, width, _ = images.shape
  grid = make_coordinate_grid((height, width), jnp.float32).reshape(-1, 2)  # (H*W, 2)
  sample_at = warp_coordinates(transform, grid).reshape(batch, height, width, 2)
  return grid_sample_2d(images, sample_at, padding_mode="reflection", align_corners=False)
