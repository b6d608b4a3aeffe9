"""grid_sample and make_coordinate_grid against torch.nn.functional.grid_sample and hand cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from torch_oracles import grid_sample_with_grads

from mmfa_jax.ops import grid_sample, grid_sample_2d, grid_sample_3d, make_coordinate_grid
from mmfa_jax.ops.grid_sample import (
  grid_sample_separable,
  interpolation_matrix,
  pixel_centre_axis,
)

PADDING_MODES = ("zeros", "border", "reflection")


def _random_case(num_spatial, dtype, seed):
  rng = np.random.default_rng(seed)
  in_spatial = (5, 7, 6)[-num_spatial:]
  out_spatial = (4, 6, 5)[-num_spatial:]
  inputs = rng.normal(size=(2, *in_spatial, 4)).astype(dtype)
  # Mostly within +-1.5, a quarter within +-3, a tenth far out at +-(10..40).
  shape = (2, *out_spatial, num_spatial)
  grid = rng.uniform(-1.5, 1.5, size=shape)
  grid = np.where(rng.random(shape) < 0.25, rng.uniform(-3, 3, shape), grid)
  far = rng.random(shape) < 0.1
  grid = np.where(far, rng.choice([-1, 1], shape) * rng.uniform(10, 40, shape), grid)
  cotangent = rng.normal(size=(2, *out_spatial, 4)).astype(dtype)
  return inputs, grid.astype(dtype), cotangent


def _jax_with_grads(inputs, grid, cotangent, padding_mode, align_corners):
  sample = functools.partial(grid_sample, padding_mode=padding_mode, align_corners=align_corners)

  def loss(x, g):
    return jnp.sum(sample(x, g) * cotangent)

  output = jax.jit(sample)(inputs, grid)
  d_inputs, d_grid = jax.jit(jax.grad(loss, argnums=(0, 1)))(inputs, grid)
  return np.asarray(output), np.asarray(d_inputs), np.asarray(d_grid)


@pytest.mark.parametrize("num_spatial", [2, 3])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_torch_float32(num_spatial, padding_mode, align_corners):
  inputs, grid, cotangent = _random_case(num_spatial, np.float32, seed=num_spatial)
  expected = grid_sample_with_grads(inputs, grid, cotangent, padding_mode, align_corners)
  actual = _jax_with_grads(inputs, grid, cotangent, padding_mode, align_corners)
  for name, a, e in zip(("output", "d_inputs", "d_grid"), actual, expected):
    assert a.shape == e.shape, name
    np.testing.assert_allclose(a, e, rtol=0, atol=1e-5, err_msg=name)
  # The case is not degenerate: outputs and grid gradients are far from zero.
  assert np.abs(expected[0]).max() > 0.5 and np.abs(expected[2]).max() > 0.5


@pytest.mark.parametrize("num_spatial", [2, 3])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_matches_torch_float64_exactly(num_spatial, padding_mode, align_corners):
  """In float64 the two agree to rounding error: same semantics, not just close ones."""
  inputs, grid, cotangent = _random_case(num_spatial, np.float64, seed=10 + num_spatial)
  expected = grid_sample_with_grads(inputs, grid, cotangent, padding_mode, align_corners)
  with jax.enable_x64(True):
    actual = _jax_with_grads(
      jnp.asarray(inputs), jnp.asarray(grid), jnp.asarray(cotangent), padding_mode, align_corners
    )
  for name, a, e in zip(("output", "d_inputs", "d_grid"), actual, expected):
    assert a.dtype == np.float64, name
    np.testing.assert_allclose(a, e, rtol=0, atol=1e-10, err_msg=name)


def test_coordinate_grid_values_and_order():
  grid = np.asarray(make_coordinate_grid((2, 3, 5)))
  assert grid.shape == (2, 3, 5, 3)
  np.testing.assert_allclose(grid[0, 0, :, 0], [-1, -0.5, 0, 0.5, 1])  # x along W
  np.testing.assert_allclose(grid[0, :, 0, 1], [-1, 0, 1])  # y along H
  np.testing.assert_allclose(grid[:, 0, 0, 2], [-1, 1])  # z along D
  np.testing.assert_allclose(grid[1, 2, 4], [1, 1, 1])
  grid_2d = np.asarray(make_coordinate_grid((4, 2)))
  assert grid_2d.shape == (4, 2, 2)
  np.testing.assert_allclose(grid_2d[3, 1], [1, 1])
  np.testing.assert_allclose(grid_2d[1, 0], [-1, -1 / 3], rtol=1e-6)


def test_pixel_centres_read_each_pixel_exactly():
  """At pixel_centre_axis coordinates, torch's grid_sample with align_corners=False returns the
  image itself; the values are the synthetic renderer's (2 i + 1) / n - 1."""
  import torch

  np.testing.assert_allclose(pixel_centre_axis(4), [-0.75, -0.25, 0.25, 0.75])
  np.testing.assert_allclose(pixel_centre_axis(64)[0], 1 / 64 - 1)
  image = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 2, 5, 7)))
  x, y = np.meshgrid(pixel_centre_axis(7), pixel_centre_axis(5))
  grid = torch.from_numpy(np.stack([x, y], -1)[None].astype(np.float64))  # (1, 5, 7, 2)
  read = torch.nn.functional.grid_sample(image, grid, align_corners=False)
  np.testing.assert_allclose(read.numpy(), image.numpy(), atol=1e-6)


def test_identity_and_reference_shrink():
  image = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
  grid = jnp.broadcast_to(make_coordinate_grid((4, 5)), (2, 4, 5, 2))
  # align_corners=True: the [-1, 1] grid hits pixel centres, an exact identity.
  np.testing.assert_allclose(grid_sample_2d(image, grid, align_corners=True), image, atol=1e-5)
  # align_corners=False with the same grid (the reference's pairing): the corner pixel (0, 0)
  # is sampled at pixel position -0.5 in x and y, a quarter of it blended with zero padding.
  out = np.asarray(grid_sample_2d(image, grid, align_corners=False))
  np.testing.assert_allclose(out[:, 0, 0], 0.25 * image[:, 0, 0], atol=1e-5)
  # The centre of an odd axis is exact: x index 2 of 5 is sampled at position 2 (y is off-grid).
  np.testing.assert_allclose(
    out[:, 1, 2], image[:, 1, 2] * (1 - 1 / 6) + image[:, 0, 2] / 6, atol=1e-4
  )


def test_hand_computed_trilinear():
  volume = np.zeros((1, 2, 2, 2, 1), np.float32)
  volume[0, 1, 0, 1, 0] = 8.0  # z=1, y=0, x=1
  # align_corners=True: (x, y, z) = (0.5, -1, 0) is pixel (0.75, 0, 0.5): weight 0.75 * 1 * 0.5.
  point = jnp.array([0.5, -1.0, 0.0]).reshape(1, 1, 1, 1, 3)
  value = grid_sample_3d(volume, point, align_corners=True)
  np.testing.assert_allclose(np.asarray(value).ravel(), [8 * 0.75 * 0.5], rtol=1e-6)


def test_vmap_matches_loop():
  inputs, grid, _ = _random_case(3, np.float32, seed=5)
  stacked_inputs = np.stack([inputs, inputs[::-1]])
  stacked_grid = np.stack([grid, -grid])
  sample = functools.partial(grid_sample, padding_mode="border")
  batched = jax.vmap(sample)(stacked_inputs, stacked_grid)
  for i in range(2):
    np.testing.assert_allclose(batched[i], sample(stacked_inputs[i], stacked_grid[i]), atol=1e-6)


def test_sharded_batch_on_mesh():
  assert jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(3)
  volume = rng.normal(size=(8, 4, 6, 6, 3)).astype(np.float32)
  grid = rng.uniform(-1.2, 1.2, size=(8, 4, 6, 6, 3)).astype(np.float32)
  sharding = NamedSharding(mesh, P("data"))
  sharded_volume = jax.device_put(volume, sharding)
  sharded_grid = jax.device_put(grid, sharding)

  def loss(x, g):
    return jnp.sum(grid_sample_3d(x, g) ** 2)

  output = jax.jit(grid_sample_3d)(sharded_volume, sharded_grid)
  grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(sharded_volume, sharded_grid)
  assert output.sharding.spec[0] == "data"
  np.testing.assert_allclose(output, grid_sample_3d(volume, grid), atol=1e-6)
  expected = jax.grad(loss, argnums=(0, 1))(volume, grid)
  for a, e in zip(grads, expected):
    np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_keep_float32_coordinates():
  inputs, grid, _ = _random_case(2, np.float32, seed=7)
  out = grid_sample(jnp.asarray(inputs, jnp.bfloat16), grid)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), grid_sample(inputs, grid), atol=0.05)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="grid must be"):
    grid_sample(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match="inputs must be"):
    grid_sample(jnp.zeros((4, 4, 2)), jnp.zeros((4, 4, 2)))
  with pytest.raises(ValueError, match="padding_mode"):
    grid_sample(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 2)), padding_mode="wrap")
  with pytest.raises(ValueError, match="5-D"):
    grid_sample_3d(jnp.zeros((1, 4, 4, 2)), jnp.zeros((1, 4, 4, 2)))


@pytest.mark.parametrize("num_spatial", [2, 3])
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("align_corners", [False, True])
def test_separable_sampling_matches_torch_with_gradients(num_spatial, padding_mode, align_corners):
  """Axis-aligned affine grids (the reference grid scaled and shifted per batch item, partly outside
  [-1, 1]) sampled separably: torch's grid_sample at the full grid is the oracle, for the output,
  the input gradient and the coordinate gradients (torch's grid gradient summed over the axes a
  coordinate does not depend on)."""
  rng = np.random.default_rng(7)
  in_spatial = (5, 7, 6)[-num_spatial:]
  out_spatial = (4, 6, 5)[-num_spatial:]
  inputs = rng.normal(size=(2, *in_spatial, 3)).astype(np.float32)
  cotangent = rng.normal(size=(2, *out_spatial, 3)).astype(np.float32)
  # Per (x, y[, z]) axis: the reference's [-1, 1] grid of the output length, scaled and shifted.
  axis_coords = []
  for axis in range(num_spatial):
    length = out_spatial[num_spatial - 1 - axis]
    base = np.linspace(-1, 1, length)
    scale = rng.uniform(0.6, 1.4, size=(2, 1))
    shift = rng.uniform(-0.7, 0.7, size=(2, 1))
    axis_coords.append((base * scale + shift).astype(np.float32))  # (B, n_out)
  mesh = np.meshgrid(*[np.arange(n) for n in out_spatial], indexing="ij")  # array order
  grid = np.stack(
    [axis_coords[c][:, mesh[num_spatial - 1 - c]] for c in range(num_spatial)], axis=-1
  )  # (B, *out_spatial, n), (x, y[, z])
  want, want_d_inputs, want_d_grid = grid_sample_with_grads(
    inputs, grid, cotangent, padding_mode, align_corners
  )
  sample = functools.partial(
    grid_sample_separable, padding_mode=padding_mode, align_corners=align_corners
  )
  got, vjp = jax.vjp(sample, inputs, axis_coords)
  d_inputs, d_coords = vjp(jnp.asarray(cotangent))
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(d_inputs, want_d_inputs, atol=1e-5)
  for c in range(num_spatial):
    array_axis = num_spatial - 1 - c  # x is the last spatial axis
    others = tuple(1 + a for a in range(num_spatial) if a != array_axis)
    np.testing.assert_allclose(
      d_coords[c], want_d_grid[..., c].sum(axis=others), rtol=1e-4, atol=1e-4
    )


def test_interpolation_matrix_hand_case():
  # Length-4 axis, align_corners=False: coordinate 0 sits between pixels 1 and 2 (1.5), -1 at the
  # outer edge of pixel 0 (-0.5: half pixel 0, half the zero padding), 1.25 beyond the end.
  rows = np.asarray(interpolation_matrix(jnp.array([0.0, -1.0, 1.25]), 4))
  np.testing.assert_allclose(rows, [[0, 0.5, 0.5, 0], [0.5, 0, 0, 0], [0, 0, 0, 0]], atol=1e-7)
  border = np.asarray(interpolation_matrix(jnp.array([-1.0, 1.25]), 4, padding_mode="border"))
  np.testing.assert_allclose(border, [[1, 0, 0, 0], [0, 0, 0, 1]], atol=1e-7)


def test_dense_motion_slot_warps_equal_grid_sample_at_sparse_motions():
  """DenseMotion's separable warp per keypoint slot (shifted reference grids) against grid_sample
  at the full ``sparse_motions`` grids: values, and gradients to the volume and both keypoint sets
  (the reference's zero padding and align_corners=False)."""
  from mmfa_jax.ops import sparse_motions
  from mmfa_jax.ops.grid_sample import coordinate_axis
  from mmfa_jax.ops.keypoints import slot_shifts

  rng = np.random.default_rng(3)
  spatial = (4, 6, 5)
  volume = jnp.asarray(rng.normal(size=(2, *spatial, 3)), jnp.float32)
  kp_source = jnp.asarray(rng.uniform(-0.9, 0.9, size=(2, 5, 3)), jnp.float32)
  kp_driving = jnp.asarray(rng.uniform(-0.9, 0.9, size=(2, 5, 3)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, 6, *spatial, 3)), jnp.float32)

  def gathered(v, s, d):
    grids = sparse_motions(s, d, spatial)  # (B, K+1, D, H, W, 3)
    out = jax.vmap(grid_sample_3d, in_axes=(None, 1), out_axes=1)(v, grids)
    return jnp.sum(out * cotangent), out

  def separable(v, s, d):
    shift = slot_shifts(s, d)
    coords = [
      coordinate_axis(n) + shift[..., c, None]
      for c, n in enumerate(spatial[::-1])  # x over W, y over H, z over D
    ]
    out = jax.vmap(grid_sample_separable, in_axes=(None, 1), out_axes=1)(v, coords)
    return jnp.sum(out * cotangent), out

  grads = jax.value_and_grad(gathered, argnums=(0, 1, 2), has_aux=True)
  (_, want), want_grads = grads(volume, kp_source, kp_driving)
  grads = jax.value_and_grad(separable, argnums=(0, 1, 2), has_aux=True)
  (_, got), got_grads = grads(volume, kp_source, kp_driving)
  np.testing.assert_allclose(got, want, atol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
