"""Anti-aliased downsampling (the reference's AntiAliasInterpolation2d) and image pyramids.

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


def antialias_kernel(scale: float) -> np.ndarray:
  """The normalised 2D Gaussian ``(size, size)`` float32 kernel for a downsampling ``scale``."""
  if not 0 < scale < 1:
    raise ValueError(f"antialias_kernel needs 0 < scale < 1, got {scale}")
  sigma = (1 / scale - 1) / 2
  size = 2 * round(sigma * 4) + 1
  position = np.arange(size, dtype=np.float64)
  gaussian_1d = np.exp(-((position - (size - 1) / 2) ** 2) / (2 * sigma**2))
  kernel = np.outer(gaussian_1d, gaussian_1d)
  return (kernel / kernel.sum()).astype(np.float32)


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
