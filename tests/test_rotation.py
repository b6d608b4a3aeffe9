"""Angle decoding and rotation matrices against hand cases and scipy's Rotation."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mmfa_jax.ops import (
  bins_to_degrees,
  euler_to_rotation_matrix,
  reference_rotation_matrix,
  rotation_matrix,
  rotation_matrix_to_euler,
)


def test_bins_to_degrees_hand_cases():
  one_hot = np.full((3, 66), -1e4, np.float32)
  one_hot[[0, 1, 2], [0, 33, 65]] = 0.0
  np.testing.assert_allclose(bins_to_degrees(one_hot), [-99.0, 0.0, 96.0], atol=1e-4)
  # Uniform logits: expected bin 32.5 -> 3 * 32.5 - 99 = -1.5 degrees.
  np.testing.assert_allclose(bins_to_degrees(np.zeros((66,), np.float32)), -1.5, atol=1e-4)
  # Two equal bins 10 and 11: 3 * 10.5 - 99 = -67.5; LivePortrait's offset -97.5 gives -66.
  two = np.full((66,), -1e4, np.float32)
  two[[10, 11]] = 2.0
  np.testing.assert_allclose(bins_to_degrees(two), -67.5, atol=1e-4)
  np.testing.assert_allclose(bins_to_degrees(two, offset=-97.5), -66.0, atol=1e-4)


def test_bins_to_degrees_matches_softmax_expectation():
  logits = np.random.default_rng(0).normal(size=(4, 66)).astype(np.float64)
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  expected = probabilities @ np.arange(66) * 3 - 99
  np.testing.assert_allclose(bins_to_degrees(logits.astype(np.float32)), expected, atol=1e-4)


def test_elementary_rotations_move_axes_as_the_convention_says():
  x, y, z = np.eye(3)
  yaw90 = np.asarray(rotation_matrix(90.0, 0.0, 0.0))
  np.testing.assert_allclose(yaw90 @ x, -z, atol=1e-6)  # yaw about y: +x -> -z
  np.testing.assert_allclose(yaw90 @ z, x, atol=1e-6)
  pitch90 = np.asarray(rotation_matrix(0.0, 90.0, 0.0))
  np.testing.assert_allclose(pitch90 @ y, z, atol=1e-6)  # pitch about x: +y -> +z
  roll90 = np.asarray(rotation_matrix(0.0, 0.0, 90.0))
  np.testing.assert_allclose(roll90 @ x, y, atol=1e-6)  # roll about z: +x -> +y


def test_composition_order_and_pi():
  rng = np.random.default_rng(1)
  yaw, pitch, roll = rng.uniform(-80, 80, size=(3, 5))
  ours = np.asarray(rotation_matrix(yaw, pitch, roll))
  for i in range(5):
    # Intrinsic X-Y-Z Euler angles give R = Rx(pitch) Ry(yaw) Rz(roll).
    expected = Rotation.from_euler("XYZ", [pitch[i], yaw[i], roll[i]], degrees=True).as_matrix()
    np.testing.assert_allclose(ours[i], expected, atol=1e-5)
  # The reference's pi = 3.14 is the same rotation at angles scaled by 3.14 / pi.
  reference = np.asarray(reference_rotation_matrix(yaw, pitch, roll))
  shrink = 3.14 / math.pi
  for i in range(5):
    angles = np.array([pitch[i], yaw[i], roll[i]]) * shrink
    expected = Rotation.from_euler("XYZ", angles, degrees=True).as_matrix()
    np.testing.assert_allclose(reference[i], expected, atol=1e-5)
  assert np.abs(reference - ours).max() > 1e-4  # the two variants really differ
  # Beta checkpoints: roll about x, pitch about y, yaw about z, R = Rroll Rpitch Ryaw.
  beta = np.asarray(euler_to_rotation_matrix(yaw, pitch, roll, convention="beta"))
  for i in range(5):
    expected = Rotation.from_euler("XYZ", [roll[i], pitch[i], yaw[i]], degrees=True).as_matrix()
    np.testing.assert_allclose(beta[i], expected, atol=1e-5)


def test_orthonormal_and_inverse():
  rng = np.random.default_rng(2)
  yaw, pitch, roll = (jnp.asarray(a, jnp.float32) for a in rng.uniform(-85, 85, size=(3, 2, 4)))
  rotations = np.asarray(rotation_matrix(yaw, pitch, roll))
  assert rotations.shape == (2, 4, 3, 3)
  identity = np.broadcast_to(np.eye(3), rotations.shape)
  np.testing.assert_allclose(rotations @ np.swapaxes(rotations, -1, -2), identity, atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-5)
  recovered = rotation_matrix_to_euler(jnp.asarray(rotations))
  for got, want in zip(recovered, (yaw, pitch, roll)):
    np.testing.assert_allclose(got, want, atol=1e-2)


def test_unknown_convention():
  with pytest.raises(ValueError, match="convention"):
    euler_to_rotation_matrix(0.0, 0.0, 0.0, convention="zyx")
