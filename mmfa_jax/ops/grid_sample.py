"""Coordinate grids and differentiable bilinear / trilinear grid sampling (channels-last).

Conventions (the face-vid2vid reference's, see architecture.md 1.2):

* Feature maps are channels-last: 2D ``(B, H, W, C)``, 3D ``(B, D, H, W, C)``.
* Sampling grids hold normalised coordinates in the **reverse** of the array-axis order: the last
  axis of a grid is ``(x, y)`` or ``(x, y, z)``, with x indexing W, y indexing H and z indexing D.
  ``-1`` and ``+1`` are the two ends of an axis; what "end" means is set by ``align_corners``
  exactly as in ``torch.nn.functional.grid_sample``:

  - ``align_corners=True``: -1 / +1 are the centres of the first / last pixel,
    ``pixel = (coord + 1) / 2 * (size - 1)``;
  - ``align_corners=False`` (the PyTorch default and what every reference call uses): -1 / +1 are
    the outer edges of the first / last pixel, ``pixel = ((coord + 1) * size - 1) / 2``.

* ``make_coordinate_grid`` spaces values over [-1, 1] *inclusive* (``2 * i / (n - 1) - 1``), the
  reference's grid. Sampled with ``align_corners=False`` (as the reference does) it is therefore not
  an exact identity: it is shrunk by ``(n - 1) / n`` about the centre. Keep that pairing to reproduce
  reference checkpoints.

The sampler gathers whole channel vectors from a flattened spatial axis (channels stay the minor,
un-indexed dimension), one gather per corner of the interpolation cell, batched over the leading
axis so that a batch sharded over a device mesh stays local to each device.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp

PaddingMode = Literal["zeros", "border", "reflection"]
_PADDING_MODES = ("zeros", "border", "reflection")


def coordinate_axis(n: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """``(n,)`` values of one axis of ``make_coordinate_grid``: ``2 * (i / (n - 1)) - 1`` (0 if n = 1)."""
  if n == 1:
    return jnp.zeros((1,), dtype)
  return 2 * (jnp.arange(n, dtype=dtype) / (n - 1)) - 1


def pixel_centre_axis(n: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """``(n,)``: the centres of ``n`` pixels in [-1, 1] image units (-1 and 1 the outer edges),
  ``(2 i + 1) / n - 1``: where ``grid_sample`` with ``align_corners=False`` reads pixel i exactly."""
  return (2 * jnp.arange(n, dtype=dtype) + 1) / n - 1


def make_coordinate_grid(spatial_shape: Sequence[int], dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """Regular grid over [-1, 1] (inclusive) for a 2D ``(H, W)`` or 3D ``(D, H, W)`` shape.

  Returns an array of shape ``(*spatial_shape, n)`` whose last axis is ``(x, y)`` or ``(x, y, z)``:
  x varies along the last spatial axis (W), y along H, z along D. Value at index i of an axis of
  length n is ``2 * (i / (n - 1)) - 1`` (0 for a length-1 axis).
  """
  spatial_shape = tuple(int(n) for n in spatial_shape)
  if len(spatial_shape) not in (2, 3):
    raise ValueError(f"make_coordinate_grid takes a 2D or 3D shape, got {spatial_shape}")
  axes = [coordinate_axis(n, dtype) for n in spatial_shape]
  mesh = jnp.meshgrid(*axes, indexing="ij")  # each (*spatial_shape), in array-axis order
  return jnp.stack(mesh[::-1], axis=-1)  # last axis (x, y[, z])


def _unnormalize(coord: jax.Array, size: int, align_corners: bool) -> jax.Array:
  """Normalised coordinate to (fractional) pixel index, in PyTorch's operation order."""
  if align_corners:
    return ((coord + 1) / 2) * (size - 1)
  return ((coord + 1) * size - 1) / 2


def _reflect(coord: jax.Array, twice_low: int, twice_high: int) -> jax.Array:
  """Reflects coordinates into [twice_low / 2, twice_high / 2] as often as needed."""
  if twice_low == twice_high:
    return jnp.zeros_like(coord)
  low = twice_low / 2
  span = (twice_high - twice_low) / 2
  distance = jnp.abs(coord - low)
  extra = jnp.fmod(distance, span)
  flips = jnp.floor(distance / span)
  return jnp.where(jnp.fmod(flips, 2) == 0, extra + low, span - extra + low)


def _source_index(coord: jax.Array, size: int, padding_mode: str, align_corners: bool) -> jax.Array:
  """Pixel-space sampling position along one axis, after border / reflection handling."""
  index = _unnormalize(coord, size, align_corners)
  if padding_mode == "border":
    index = jnp.clip(index, 0, size - 1)
  elif padding_mode == "reflection":
    if align_corners:
      index = _reflect(index, 0, 2 * (size - 1))
    else:
      index = _reflect(index, -1, 2 * size - 1)
    index = jnp.clip(index, 0, size - 1)
  return index


def _gather_rows(flat: jax.Array, index: jax.Array) -> jax.Array:
  """(B, S, C) values, (B, P) int indices in [0, S) -> (B, P, C)."""
  return jax.vmap(lambda rows, idx: jnp.take(rows, idx, axis=0, mode="clip"))(flat, index)


def grid_sample(
  inputs: jax.Array,
  grid: jax.Array,
  *,
  padding_mode: PaddingMode = "zeros",
  align_corners: bool = False,
) -> jax.Array:
  """Bilinear (2D) or trilinear (3D) sampling of ``inputs`` at ``grid``, as torch's grid_sample.

  Args:
    inputs: ``(B, H, W, C)`` or ``(B, D, H, W, C)`` feature map.
    grid: ``(B, *out_spatial, n)`` normalised sampling positions, last axis ``(x, y[, z])`` with
      n = 2 for 2D and 3 for 3D inputs; ``out_spatial`` is any shape (usually ``(Ho, Wo)`` or
      ``(Do, Ho, Wo)``). Computed in at least float32 whatever its dtype.
    padding_mode: ``'zeros'`` (each out-of-range corner contributes 0), ``'border'`` (clamp) or
      ``'reflection'`` (mirror about the borders, as set by ``align_corners``).
    align_corners: PyTorch's flag; see the module docstring.

  Returns:
    ``(B, *out_spatial, C)`` in the dtype of ``inputs``. Differentiable with respect to both
    ``inputs`` and ``grid``; the gradients equal PyTorch's.
  """
  if padding_mode not in _PADDING_MODES:
    raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
  num_spatial = inputs.ndim - 2
  if num_spatial not in (2, 3):
    raise ValueError(f"inputs must be (B, H, W, C) or (B, D, H, W, C), got shape {inputs.shape}")
  if grid.shape[-1] != num_spatial or grid.ndim < 2 or grid.shape[0] != inputs.shape[0]:
    raise ValueError(
      f"grid must be (B, ..., {num_spatial}) with B = {inputs.shape[0]} for inputs of shape "
      f"{inputs.shape}, got {grid.shape}"
    )
  batch, *spatial, channels = inputs.shape
  out_spatial = grid.shape[1:-1]
  coord_dtype = jnp.promote_types(grid.dtype, jnp.float32)
  points = grid.reshape(batch, -1, num_spatial).astype(coord_dtype)  # (B, P, n), (x, y[, z])

  # Array-axis order (z, y, x) is the reverse of the grid's (x, y, z).
  positions = [
    _source_index(points[..., num_spatial - 1 - axis], size, padding_mode, align_corners)
    for axis, size in enumerate(spatial)
  ]  # each (B, P), fractional pixel index along array axis `axis`
  lower = [jnp.floor(p) for p in positions]
  weights_by_bit = [(low + 1 - p, p - low) for p, low in zip(positions, lower)]

  flat = inputs.reshape(batch, math.prod(spatial), channels)  # (B, S, C)
  output = jnp.zeros(
    (batch, points.shape[1], channels), jnp.promote_types(inputs.dtype, coord_dtype)
  )
  for corner in itertools.product((0, 1), repeat=num_spatial):
    weight = None
    valid = None
    flat_index = None
    for axis, (bit, size) in enumerate(zip(corner, spatial)):
      pos = lower[axis] + bit
      axis_weight = weights_by_bit[axis][bit]
      axis_valid = (pos >= 0) & (pos <= size - 1)
      axis_index = jnp.clip(pos, 0, size - 1).astype(jnp.int32)
      weight = axis_weight if weight is None else weight * axis_weight
      valid = axis_valid if valid is None else valid & axis_valid
      flat_index = axis_index if flat_index is None else flat_index * size + axis_index
    values = _gather_rows(flat, flat_index)  # (B, P, C)
    output = output + values * jnp.where(valid, weight, 0)[..., None]
  return output.reshape(batch, *out_spatial, channels).astype(inputs.dtype)


def interpolation_matrix(
  coords: jax.Array,
  size: int,
  *,
  padding_mode: PaddingMode = "zeros",
  align_corners: bool = False,
) -> jax.Array:
  """Linear-interpolation weights along one axis, as ``grid_sample`` computes them.

  Args:
    coords: ``(..., n_out)`` normalised coordinates along the axis (see the module docstring).
    size: the sampled axis' length ``n_in``.

  Returns:
    ``(..., n_out, n_in)`` in at least float32: row i holds the two weights that ``grid_sample``
    gives the neighbours of ``coords[i]`` (one row sums to 1 inside the axis; taps outside it are
    dropped under ``'zeros'`` padding).
  """
  if padding_mode not in _PADDING_MODES:
    raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
  coords = coords.astype(jnp.promote_types(coords.dtype, jnp.float32))
  position = _source_index(coords, size, padding_mode, align_corners)  # (..., n_out), pixels
  lower = jnp.floor(position)
  upper_weight = position - lower
  # one_hot of an index outside [0, size) is a zero row: zero padding for free.
  lower_index = lower.astype(jnp.int32)
  return (1 - upper_weight)[..., None] * jax.nn.one_hot(
    lower_index, size, dtype=coords.dtype
  ) + upper_weight[..., None] * jax.nn.one_hot(lower_index + 1, size, dtype=coords.dtype)


def grid_sample_separable(
  inputs: jax.Array,
  axis_coords: Sequence[jax.Array],
  *,
  padding_mode: PaddingMode = "zeros",
  align_corners: bool = False,
) -> jax.Array:
  """``grid_sample`` at a grid whose x depends only on the output's W index, y only on H, z only
  on D (an axis-aligned affine grid: shifted or scaled identity grids), without gathers.

  Each axis becomes an ``(n_out, n_in)`` interpolation matrix (``interpolation_matrix``) and the
  sample is their product with the input, one small matrix product per axis. The weights are
  those of ``grid_sample`` (trilinear weights factor per axis, and so does zero padding), so the
  result and its gradients (to the inputs and to the coordinates) equal ``grid_sample`` at the
  full grid.

  Args:
    inputs: ``(B, H, W, C)`` or ``(B, D, H, W, C)``.
    axis_coords: ``(x, y)`` or ``(x, y, z)``: x ``(B, Wo)``, y ``(B, Ho)``, z ``(B, Do)``, normalised.

  Returns ``(B, Ho, Wo, C)`` or ``(B, Do, Ho, Wo, C)`` in the dtype of ``inputs``.
  """
  num_spatial = inputs.ndim - 2
  if num_spatial not in (2, 3) or len(axis_coords) != num_spatial:
    raise ValueError(
      f"want (B, H, W, C) or (B, D, H, W, C) inputs and one coordinate array per spatial axis, "
      f"got {inputs.shape} and {len(axis_coords)} arrays"
    )
  spatial = inputs.shape[1:-1]
  # Array-axis order (z, y, x) is the reverse of (x, y, z).
  matrices = [
    interpolation_matrix(
      axis_coords[num_spatial - 1 - axis],
      size,
      padding_mode=padding_mode,
      align_corners=align_corners,
    )
    for axis, size in enumerate(spatial)
  ]  # array axis a: (B, n_out_a, n_in_a)
  compute = jnp.promote_types(inputs.dtype, jnp.float32)
  # Full float32 products (no TF32 / bfloat16 passes on GPU and TPU): the weights are exact.
  precision = jax.lax.Precision.HIGHEST
  out = inputs.astype(compute)
  letters = "dhw"[-num_spatial:]
  for axis, matrix in enumerate(matrices):
    source = letters.replace(letters[axis], "i")
    target = letters
    out = jnp.einsum(f"b{letters[axis]}i,b{source}c->b{target}c", matrix, out, precision=precision)
  return out.astype(inputs.dtype)


def grid_sample_2d(
  inputs: jax.Array,
  grid: jax.Array,
  *,
  padding_mode: PaddingMode = "zeros",
  align_corners: bool = False,
) -> jax.Array:
  """``grid_sample`` for ``(B, H, W, C)`` inputs and ``(B, Ho, Wo, 2)`` grids of (x, y)."""
  if inputs.ndim != 4 or grid.ndim != 4:
    raise ValueError(
      f"grid_sample_2d wants 4-D inputs and grid, got {inputs.shape} and {grid.shape}"
    )
  return grid_sample(inputs, grid, padding_mode=padding_mode, align_corners=align_corners)


def grid_sample_3d(
  inputs: jax.Array,
  grid: jax.Array,
  *,
  padding_mode: PaddingMode = "zeros",
  align_corners: bool = False,
) -> jax.Array:
  """``grid_sample`` for ``(B, D, H, W, C)`` inputs and ``(B, Do, Ho, Wo, 3)`` grids of (x, y, z)."""
  if inputs.ndim != 5 or grid.ndim != 5:
    raise ValueError(
      f"grid_sample_3d wants 5-D inputs and grid, got {inputs.shape} and {grid.shape}"
    )
  return grid_sample(inputs, grid, padding_mode=padding_mode, align_corners=align_corners)
