"""LPIPS (Zhang et al. 2018), the ``lpips`` package's ``LPIPS(net='alex', version='0.1')``.

``lpips(variables, x, y)`` is that package's ``forward(x, y, normalize=True)`` on channels-last
images in [0, 1]: both images go to [-1, 1], then through the package's ScalingLayer
``(v - SHIFT) / SCALE`` per RGB channel, then through torchvision AlexNet's ``features`` up to the
fifth ReLU. At each of the five ReLU outputs (64, 192, 384, 256, 256 channels) the features are
unit-normalised over channels per pixel, ``f / (sqrt(sum_c f^2) + 1e-10)``; the squared difference
of the two images' features is weighted per channel by a 1x1 convolution to one channel without
bias (the package's ``lin{k}``), averaged over the pixels, and the five layer terms are summed.

Parameter tree (``params``), named after the PyTorch files so ``pretrained_converters.lpips`` maps
them by name:

* ``features_{0,3,6,8,10}/{kernel (k, k, in, out), bias (out,)}``: AlexNet's convolutions, indexed
  as in torchvision's ``features`` Sequential (file keys ``features.{i}.{weight,bias}``).
* ``lin{0..4}/kernel (1, 1, C, 1)``: the linear layers (file keys ``lin{k}.model.1.weight``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from mmfa_jax.ops.layers import Conv, max_pool

Dtype = Any

# The lpips package's ScalingLayer, applied to images already in [-1, 1] (RGB).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10  # added to the per-pixel feature norm (lpips.normalize_tensor)
# AlexNet's convolutions: (torchvision features index, out channels, kernel, stride, padding).
ALEXNET_CONVS = (
  (0, 64, 11, 4, 2),
  (3, 192, 5, 1, 2),
  (6, 384, 3, 1, 1),
  (8, 256, 3, 1, 1),
  (10, 256, 3, 1, 1),
)
_POOLED_BEFORE = frozenset({3, 6})  # MaxPool(3, stride 2) sits just before these convs
MIN_SIZE = 31  # smallest H and W that leave one pixel after the second pool


def unit_normalize(features: jax.Array) -> jax.Array:
  """``f / (||f||_2 + 1e-10)`` over the last (channel) axis, in float32 (lpips.normalize_tensor).

  A pixel whose features are all zero has an infinite norm gradient, but the features come from a
  ReLU, whose gradient (``jax.nn.relu``: a select, like PyTorch's) drops it there.
  """
  features = features.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(features), axis=-1, keepdims=True))  # (..., 1)
  return features / (norm + NORM_EPS)


class LPIPS(nn.Module):
  """LPIPS v0.1 with the AlexNet trunk; ``__call__(x, y)`` -> (B,) float32 distances.

  Attributes:
    dtype: computation dtype of the AlexNet convolutions (float32 by default). The feature
      normalisation, the linear layers and the averages are always float32.
    precision: convolution precision (None: the backend's default).
  """

  dtype: Dtype = jnp.float32
  precision: lax.PrecisionLike = None

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    """``x``, ``y``: (B, H, W, 3) RGB images in [0, 1], H and W at least ``MIN_SIZE``."""
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(
        f"LPIPS needs two (B, H, W, 3) images of one shape, got {x.shape}, {y.shape}"
      )
    if min(x.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"LPIPS (AlexNet) needs H, W >= {MIN_SIZE}, got {x.shape[1:3]}")
    batch = x.shape[0]
    images = jnp.concatenate([x, y], axis=0).astype(jnp.float32)  # (2B, H, W, 3)
    hidden = ((2 * images - 1 - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)).astype(self.dtype)
    distance = jnp.zeros((batch,), jnp.float32)
    for layer, (index, width, kernel, stride, padding) in enumerate(ALEXNET_CONVS):
      if index in _POOLED_BEFORE:
        hidden = max_pool(hidden, (3, 3), (2, 2), 0)  # (2B, h', w', C)
      conv = Conv(
        width,
        kernel,
        stride,
        padding,
        dtype=self.dtype,
        precision=self.precision,
        name=f"features_{index}",
      )
      hidden = nn.relu(conv(hidden))  # (2B, h, w, width)
      features = unit_normalize(hidden)  # (2B, h, w, width) float32
      squared = jnp.square(features[:batch] - features[batch:])  # (B, h, w, width)
      linear = Conv(1, 1, use_bias=False, dtype=jnp.float32, name=f"lin{layer}")
      weighted = linear(squared)  # (B, h, w, 1)
      distance = distance + jnp.mean(weighted, axis=(1, 2, 3))  # (B,)
    return distance


@jax.jit
def lpips(variables: Any, x: jax.Array, y: jax.Array) -> jax.Array:
  """LPIPS distances (B,) float32 between (B, H, W, 3) images in [0, 1] (float32 ``LPIPS``).

  ``variables``: ``{'params': ...}`` of ``LPIPS``, e.g. from ``pretrained_converters.lpips``.
  Equals the ``lpips`` package's ``LPIPS(net='alex')(x, y, normalize=True)`` (NCHW there).
  """
  return LPIPS().apply(variables, x, y)
