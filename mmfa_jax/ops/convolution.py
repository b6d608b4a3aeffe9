"""Convolutions with PyTorch's semantics (channels-last, explicit padding), in three exact
implementations, because XLA:CPU's native 3D convolutions and kernel gradients are several times
slower than PyTorch's:

* ``native``: XLA's convolution;
* ``depth_taps``: a 3D convolution as a sum over its depth taps of 2D convolutions (output depth
  folded into the batch), differentiated by JAX;
* ``decomposed``: depth taps with custom gradients (kernel gradients as one matrix product per
  kernel tap).

``MMFA_JAX_CONV`` (``native``, ``depth_taps``, ``decomposed`` or ``auto``, the default: depth taps
on CPU, native elsewhere) or the ``conv_implementation`` context manager choose, at trace time.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

_DIMENSION_NUMBERS = {
  1: ("NWC", "WIO", "NWC"),
  2: ("NHWC", "HWIO", "NHWC"),
  3: ("NDHWC", "DHWIO", "NDHWC"),
}

ConvImplementation = Literal["native", "depth_taps", "decomposed", "auto"]
_CONV_IMPLEMENTATIONS = ("native", "depth_taps", "decomposed", "auto")
_conv_override: list[str] = []
# Kernel gradients by shifted-window matrix products up to this many kernel taps (3 x 3 x 3);
# larger kernels would copy the input once per tap.
_MAX_WINDOW_TAPS = 27


@contextlib.contextmanager
def conv_implementation(implementation: ConvImplementation) -> Iterator[None]:
  """Within the block, convolutions traced use ``implementation`` (overrides the environment)."""
  if implementation not in _CONV_IMPLEMENTATIONS:
    raise ValueError(f"convolution implementation must be one of {_CONV_IMPLEMENTATIONS}")
  _conv_override.append(implementation)
  try:
    yield
  finally:
    _conv_override.pop()


def resolved_conv_implementation() -> str:
  """``'native'``, ``'depth_taps'`` or ``'decomposed'``: what a convolution traced now uses.

  The innermost ``conv_implementation`` block, else ``MMFA_JAX_CONV``, else ``auto``; ``auto``
  means depth taps when JAX's default backend is the CPU, native otherwise. The custom gradients
  of ``decomposed`` are faster on XLA:CPU but opt-in: in full test runs (2026-11-26) XLA:CPU
  deadlocked in their per-tap all-reduces on 8 host devices, and segfaulted compiling a bfloat16
  gradient that contained them (the same compile passed on its own).
  """
  choice = _conv_override[-1] if _conv_override else os.environ.get("MMFA_JAX_CONV", "auto")
  if choice not in _CONV_IMPLEMENTATIONS:
    raise ValueError(f"MMFA_JAX_CONV must be one of {_CONV_IMPLEMENTATIONS}, got {choice!r}")
  if choice == "auto":
    return "depth_taps" if jax.default_backend() == "cpu" else "native"
  return choice


def _native_conv(inputs, kernel, strides, padding, groups, precision):
  return lax.conv_general_dilated(
    inputs,
    kernel,
    window_strides=strides,
    padding=padding,
    dimension_numbers=_DIMENSION_NUMBERS[inputs.ndim - 2],
    feature_group_count=groups,
    precision=precision,
  )


def conv3d_depth_taps(
  inputs: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  *,
  feature_group_count: int = 1,
  precision: lax.PrecisionLike = None,
) -> jax.Array:
  """A 3D convolution as the sum over its ``kd`` depth taps of 2D convolutions over (H, W), each
  over the depth slices that tap reads, folded into the batch (partial sums in float32). A tap
  convolves only the output depths where it reads the input, not the zero padding: for the dense
  motion's 7 x 7 x 7 mask convolution over a depth of 4 (the synthetic configs) that is 16 of the
  28 slices, for vox's depth of 16, 100 of 112.

  Arguments as ``conv``, 3D only. Exact: it differs from XLA's native 3D convolution only in the
  order of the float additions. Returns ``(B, Do, Ho, Wo, out)`` in the dtype of ``inputs``.
  """
  strides, padding = tuple(strides), tuple(padding)
  taps, depth_stride, (depth_low, depth_high) = kernel.shape[0], strides[0], padding[0]
  batch, depth, height, width, channels = inputs.shape
  out_depth = (depth + depth_low + depth_high - taps) // depth_stride + 1
  if out_depth < 1:
    raise ValueError(
      f"3D kernel depth {taps} is deeper than the padded input depth of {inputs.shape}"
    )
  accumulate = jnp.promote_types(inputs.dtype, jnp.float32)
  total = None
  for tap in range(taps):
    # Output depth d reads input depth d * stride + tap - depth_low; keep the d where that exists.
    first = max(0, -(-(depth_low - tap) // depth_stride))
    last = min(out_depth - 1, (depth - 1 + depth_low - tap) // depth_stride)
    if first > last:
      continue  # this tap reads only padding
    count, start = last - first + 1, first * depth_stride + tap - depth_low
    slab = lax.slice_in_dim(
      inputs, start, start + depth_stride * (count - 1) + 1, depth_stride, axis=1
    )  # (B, count, H, W, C): the slices this tap reads, one per kept output depth
    partial = lax.conv_general_dilated(
      slab.reshape(batch * count, height, width, channels),
      kernel[tap],
      window_strides=strides[1:],
      padding=padding[1:],
      dimension_numbers=_DIMENSION_NUMBERS[2],
      feature_group_count=feature_group_count,
      precision=precision,
      preferred_element_type=accumulate,
    )  # (B * count, Ho, Wo, out)
    partial = partial.reshape(batch, count, *partial.shape[1:])
    if count < out_depth:
      partial = jnp.pad(partial, ((0, 0), (first, out_depth - 1 - last), (0, 0), (0, 0), (0, 0)))
    total = partial if total is None else total + partial  # (B, Do, Ho, Wo, out)
  if total is None:  # only when the depth padding is at least the kernel's depth
    raise ValueError(
      f"3D convolution of depth {depth} with kernel depth {taps}, stride {depth_stride} and depth "
      f"padding {padding[0]}: every output reads only padding"
    )
  return total.astype(inputs.dtype)


def window_kernel_gradient(
  inputs: jax.Array,
  cotangent: jax.Array,
  kernel_shape: Sequence[int],
  padding: Sequence[tuple[int, int]],
  precision: lax.PrecisionLike = None,
) -> jax.Array:
  """The kernel gradient of a stride-1, ungrouped convolution as one matrix product per kernel tap:
  ``dK[tap] = window(padded inputs at tap)^T @ cotangent`` over every batch and output position.

  Args:
    inputs: ``(B, *spatial, C)``; cotangent: ``(B, *out_spatial, out)``; kernel_shape:
    ``(*k, C, out)``; padding: ``(low, high)`` per spatial axis.

  Returns ``kernel_shape`` in the dtype of ``inputs`` (products accumulated in float32).
  """
  num_spatial = inputs.ndim - 2
  padded = jnp.pad(inputs, ((0, 0), *[tuple(p) for p in padding], (0, 0)))
  out_spatial = cotangent.shape[1:-1]
  channels, features = kernel_shape[-2], kernel_shape[-1]
  flat_cotangent = cotangent.reshape(-1, features)  # (N, out)
  accumulate = jnp.promote_types(inputs.dtype, jnp.float32)
  taps = []
  source = padded
  for offset in itertools.product(*[range(k) for k in kernel_shape[:num_spatial]]):
    window = source[
      (slice(None), *[slice(o, o + n) for o, n in zip(offset, out_spatial)], slice(None))
    ].reshape(-1, channels)  # (N, C): the inputs this tap reads, one row per output position
    product = jnp.matmul(
      window.T, flat_cotangent, precision=precision, preferred_element_type=accumulate
    )  # (C, out)
    # The next window is cut only after this product exists: one window alive at a time (left to
    # itself XLA may keep every window, 27 input copies). Unrolled, not a scan: a loop would hold
    # the batch all-reduce of a sharded batch, which deadlocks XLA:CPU's host devices.
    product, source = lax.optimization_barrier((product, source))
    taps.append(product)
  return jnp.stack(taps).reshape(kernel_shape).astype(inputs.dtype)


def _taps_or_native(
  inputs: jax.Array,
  kernel: jax.Array,
  strides: tuple[int, ...],
  padding: tuple[tuple[int, int], ...],
  groups: int,
  precision: Any,
) -> jax.Array:
  """The forward of ``'depth_taps'`` and ``'decomposed'``: depth taps for 3D, XLA's for 2D."""
  if inputs.ndim == 5:
    return conv3d_depth_taps(
      inputs, kernel, strides, padding, feature_group_count=groups, precision=precision
    )
  return _native_conv(inputs, kernel, strides, padding, groups, precision)


@functools.cache
def _decomposed_conv(
  strides: tuple[int, ...],
  padding: tuple[tuple[int, int], ...],
  groups: int,
  precision: Any,
  num_spatial: int,
) -> Any:
  """The decomposed convolution for one static configuration, with its custom gradient."""

  def forward(inputs, kernel, padding=padding):
    return _taps_or_native(inputs, kernel, strides, padding, groups, precision)

  @jax.custom_vjp
  def convolve(inputs, kernel):
    return forward(inputs, kernel)

  def convolve_forward(inputs, kernel):
    return forward(inputs, kernel), (inputs, kernel)

  def convolve_backward(residuals, cotangent):
    inputs, kernel = residuals
    sizes = kernel.shape[:num_spatial]
    plain = all(s == 1 for s in strides) and groups == 1
    if plain and all(max(low, high) <= k - 1 for k, (low, high) in zip(sizes, padding)):
      # The input gradient of a stride-1 correlation is the correlation of the cotangent with the
      # flipped kernel (in and out swapped), padded by k - 1 - p: the same fast forward.
      flipped = jnp.swapaxes(jnp.flip(kernel, axis=tuple(range(num_spatial))), -1, -2)
      transposed_padding = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(sizes, padding))
      d_inputs = forward(cotangent.astype(inputs.dtype), flipped, transposed_padding)
    else:
      _, input_vjp = jax.vjp(lambda x: forward(x, kernel), inputs)
      (d_inputs,) = input_vjp(cotangent)
    if plain and math.prod(sizes) <= _MAX_WINDOW_TAPS:
      d_kernel = window_kernel_gradient(inputs, cotangent, kernel.shape, padding, precision).astype(
        kernel.dtype
      )
    else:
      _, kernel_vjp = jax.vjp(lambda k: forward(inputs, k), kernel)
      (d_kernel,) = kernel_vjp(cotangent)
    return d_inputs.astype(inputs.dtype), d_kernel

  convolve.defvjp(convolve_forward, convolve_backward)
  return convolve


def conv(
  inputs: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int],
  padding: Sequence[tuple[int, int]],
  *,
  feature_group_count: int = 1,
  precision: lax.PrecisionLike = None,
  implementation: ConvImplementation = "auto",
) -> jax.Array:
  """2D or 3D convolution, PyTorch's cross-correlation, channels-last.

  Args:
    inputs: ``(B, H, W, C)`` or ``(B, D, H, W, C)``.
    kernel: ``(*k, C / groups, out)``.
    strides: one per spatial axis.
    padding: ``(low, high)`` zeros per spatial axis.
    implementation: ``'native'`` (XLA's ``conv_general_dilated`` and its gradients),
      ``'decomposed'`` (3D convolutions as depth-tap 2D convolutions, ``conv3d_depth_taps``; for
      stride-1 ungrouped convolutions, input gradients as the same forward convolution of the
      cotangent with the flipped kernel, and kernel gradients (at most 27 taps) as shifted-window
      matrix products, ``window_kernel_gradient``; other gradients by JAX), ``'depth_taps'``
      (the same forward, gradients by JAX) or ``'auto'`` (``resolved_conv_implementation``: depth
      taps on CPU, where XLA's 3D convolutions are several times slower than PyTorch's, native
      elsewhere).

  Returns ``(B, *out_spatial, out)``. The implementations are exact: they differ only in the order
  of the float additions, for the values and for the gradients.
  """
  if implementation == "auto":
    implementation = resolved_conv_implementation()
  strides = tuple(int(v) for v in strides)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if implementation == "native":
    return _native_conv(inputs, kernel, strides, padding, feature_group_count, precision)
  if implementation == "depth_taps":
    return _taps_or_native(inputs, kernel, strides, padding, feature_group_count, precision)
  if implementation != "decomposed":
    raise ValueError(f"unknown convolution implementation {implementation!r}")
  convolve = _decomposed_conv(strides, padding, feature_group_count, precision, inputs.ndim - 2)
  return convolve(inputs, kernel)
