"""Gaussian filters: anti-aliased downsampling (the reference's AntiAliasInterpolation2d), image
pyramids and a blur with one sigma per image.

Exactly architecture.md 2.9: ``sigma = (1 / scale - 1) / 2``, kernel size ``2 * round(4 * sigma) + 1``
(Python rounding), a normalised separable Gaussian centred at ``(size - 1) / 2`` applied depthwise
after zero padding by ``size // 2``, then every ``int(1 / scale)``-th row and column from index 0
(done here as a strided convolution, which gives the same samples). Images are ``(B, H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def gaussian_taps(sigma: float | np.ndarray | jax.Array, radius: int) -> np.ndarray | jax.Array:
  """Normalised 1D Gaussian taps at offsets ``-radius..radius`` (pixels): ``(..., 2 radius + 1)``
  for ``sigma`` of shape ``(...)``. NumPy float64 for a Python or NumPy ``sigma``, JAX (traceable)
  for a JAX one; a sigma at or below 1e-3 gives the identity tap."""
  xp = jnp if isinstance(sigma, jax.Array) else np
  sigma = xp.asarray(sigma)[..., None]  # (..., 1)
  offsets = xp.arange(-radius, radius + 1, dtype=sigma.dtype)  # (T,)
  safe = xp.maximum(sigma, 1e-3)
  taps = xp.where(sigma > 1e-3, xp.exp(-0.5 * (offsets / safe) ** 2), offsets == 0)
  return taps / taps.sum(-1, keepdims=True)


def antialias_kernel(scale: float) -> np.ndarray:
  """The normalised 2D Gaussian ``(size, size)`` float32 kernel for a downsampling ``scale``."""
  if not 0 < scale < 1:
    raise ValueError(f"antialias_kernel needs 0 < scale < 1, got {scale}")
  sigma = (1 / scale - 1) / 2
  gaussian_1d = gaussian_taps(sigma, round(sigma * 4))  # size 2 * round(4 sigma) + 1
  return np.outer(gaussian_1d, gaussian_1d).astype(np.float32)


def gaussian_blur(images: jax.Array, sigmas: jax.Array, radius: int = 3) -> jax.Array:
  """Separable Gaussian blur of ``(B, H, W, C)`` with one ``sigma`` (pixels) per image, taps
  ``-radius..radius``; sigma 0 leaves an image unchanged. Edges are padded by replication."""
  taps = gaussian_taps(jnp.asarray(sigmas, jnp.float32), radius)  # (B, T)
  padded = jnp.pad(images, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="edge")
  h, w = images.shape[1:3]
  rows = sum(taps[:, i, None, None, None] * padded[:, i : i + h] for i in range(2 * radius + 1))
  return sum(taps[:, i, None, None, None] * rows[:, :, i : i + w] for i in range(2 * radius + 1))


def antialias_downsample(
  images: jax.Array, scale: float, *, precision: lax.PrecisionLike = None
) -> jax.Array:
  """Gaussian blur then subsample by ``int(1 / scale)``; ``scale == 1`` returns the input.

  Args:
    images: ``(B, H, W, C)``.
    scale: output / input size ratio in (0, 1].
    precision: passed to the convolution.

  Returns:
    ``(B, ceil(H * s'), ceil(W * s'), C)`` with ``s' = 1 / int(1 / scale)``, dtype of ``images``.
  """
  if scale == 1:
    return images
  kernel = antialias_kernel(scale)
  size = kernel.shape[0]
  stride = int(1 / scale)
  channels = images.shape[-1]
  depthwise = jnp.asarray(np.broadcast_to(kernel[:, :, None, None], (size, size, 1, channels)))
  half = size // 2
  return lax.conv_general_dilated(
    images,
    depthwise.astype(images.dtype),
    window_strides=(stride, stride),
    padding=((half, half), (half, half)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
    feature_group_count=channels,
    precision=precision,
  )


def image_pyramid(
  images: jax.Array, scales: Sequence[float], *, precision: lax.PrecisionLike = None
) -> dict[float, jax.Array]:
  """``{scale: antialias_downsample(images, scale)}`` for each scale (the reference's ImagePyramide).

  With scales ``(1, 0.5, 0.25, 0.125)`` and 256 px input: 256, 128, 64 and 32 px images.
  """
  return {float(s): antialias_downsample(images, s, precision=precision) for s in scales}
