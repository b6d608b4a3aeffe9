"""Head-pose angles: 66-bin logits to degrees, and degrees to rotation matrices.

Angles are in **degrees** everywhere in the public API. Rotation matrices act on column vectors
``(x, y, z)`` (``kp_rotated = R @ kp``), in the normalised keypoint space of
``make_coordinate_grid`` (x along image width, y along height, z along the depth slices).

Conventions (architecture.md 6.1, 6.2):

* ``'reference'`` (the current face-vid2vid reference and MMFA): pitch about x, yaw about y,
  roll about z, ``R = R_pitch @ R_yaw @ R_roll``.
* ``'beta'`` (needed for the old Vox-256-Beta checkpoints): roll about x, pitch about y, yaw
  about z, ``R = R_roll @ R_pitch @ R_yaw``.

The reference converts degrees to radians with pi approximated by 3.14 (``REFERENCE_PI``); MMFA
editing uses the exact pi. ``reference_rotation_matrix`` and ``rotation_matrix`` name the two.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

REFERENCE_PI = 3.14
NUM_ANGLE_BINS = 66
ANGLE_BIN_WIDTH = 3.0  # degrees per bin
ANGLE_OFFSET = -99.0  # degrees: the reference decodes to the lower edge of each bin

Convention = Literal["reference", "beta"]


def bins_to_degrees(
  logits: jax.Array, *, bin_width: float = ANGLE_BIN_WIDTH, offset: float = ANGLE_OFFSET
) -> jax.Array:
  """Softmax expectation over angle bins, in degrees.

  Args:
    logits: ``(..., 66)`` unnormalised bin scores (Hopenet / HEEstimator heads).
    bin_width: degrees per bin.
    offset: degrees of bin 0. The reference's -99 decodes to a bin's lower edge, a -1.5 degree
      bias; LivePortrait uses -97.5 (the bin centre).

  Returns:
    ``(...)`` angles in degrees, in ``[offset, offset + bin_width * (bins - 1)]``.
  """
  probabilities = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), -1)
  bins = jnp.arange(logits.shape[-1], dtype=probabilities.dtype)
  return jnp.sum(probabilities * bins, axis=-1) * bin_width + offset


def _axis_rotation(angle: jax.Array, axis: str) -> jax.Array:
  """(...) radians -> (..., 3, 3) right-handed rotation about one coordinate axis."""
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  one, zero = jnp.ones_like(angle), jnp.zeros_like(angle)
  if axis == "x":
    rows = ((one, zero, zero), (zero, cos, -sin), (zero, sin, cos))
  elif axis == "y":
    rows = ((cos, zero, sin), (zero, one, zero), (-sin, zero, cos))
  else:
    rows = ((cos, -sin, zero), (sin, cos, zero), (zero, zero, one))
  return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def euler_to_rotation_matrix(
  yaw: jax.Array,
  pitch: jax.Array,
  roll: jax.Array,
  *,
  pi: float = math.pi,
  convention: Convention = "reference",
) -> jax.Array:
  """Yaw, pitch, roll in degrees (any equal shape ``(...)``) to ``(..., 3, 3)`` rotation matrices.

  ``pi`` is the constant used to convert degrees to radians (the reference uses 3.14).
  """
  yaw, pitch, roll = jnp.broadcast_arrays(
    *(jnp.asarray(a, jnp.float32) for a in (yaw, pitch, roll))
  )
  to_radians = pi / 180
  yaw, pitch, roll = yaw * to_radians, pitch * to_radians, roll * to_radians
  if convention == "reference":
    return _axis_rotation(pitch, "x") @ _axis_rotation(yaw, "y") @ _axis_rotation(roll, "z")
  if convention == "beta":
    return _axis_rotation(roll, "x") @ _axis_rotation(pitch, "y") @ _axis_rotation(yaw, "z")
  raise ValueError(f"convention must be 'reference' or 'beta', got {convention!r}")


def reference_rotation_matrix(yaw: jax.Array, pitch: jax.Array, roll: jax.Array) -> jax.Array:
  """The reference's rotation: ``'reference'`` convention with pi = 3.14 (checkpoint parity)."""
  return euler_to_rotation_matrix(yaw, pitch, roll, pi=REFERENCE_PI, convention="reference")


def rotation_matrix(yaw: jax.Array, pitch: jax.Array, roll: jax.Array) -> jax.Array:
  """``'reference'`` convention with the exact pi (MMFA training and editing)."""
  return euler_to_rotation_matrix(yaw, pitch, roll, pi=math.pi, convention="reference")


def rotation_matrix_to_euler(rotation: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Inverse of ``rotation_matrix``: ``(..., 3, 3)`` -> (yaw, pitch, roll) in degrees.

  Exact pi, ``'reference'`` convention; unique for |yaw| < 90 degrees. With
  ``R = Rx(pitch) Ry(yaw) Rz(roll)``: ``R[0, 2] = sin(yaw)``, ``R[0, :2] = cos(yaw) (cos r, -sin r)``
  and ``R[1:, 2] = cos(yaw) (-sin p, cos p)``.
  """
  to_degrees = 180 / math.pi
  yaw = jnp.arcsin(jnp.clip(rotation[..., 0, 2], -1.0, 1.0))
  roll = jnp.arctan2(-rotation[..., 0, 1], rotation[..., 0, 0])
  pitch = jnp.arctan2(-rotation[..., 1, 2], rotation[..., 2, 2])
  return yaw * to_degrees, pitch * to_degrees, roll * to_degrees
