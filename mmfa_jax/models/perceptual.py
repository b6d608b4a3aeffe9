"""Frozen perceptual networks: VGG19 (ImageNet) and VGG-Face (architecture.md 11).

Both return the five post-ReLU taps the losses use (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1)
for ``(B, H, W, 3)`` RGB images in [0, 1], after their own input normalisation, and only build
the convolutions up to conv5_1. Names follow the PyTorch files: VGG19 ``features_{i}`` (torchvision
indices 0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28), VGG-Face ``conv{b}_{j}`` (``vgg_face_dag``).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.ops.layers import Conv

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGGFACE_MEAN = (129.186279296875, 104.76238250732422, 93.59396362304688)  # RGB, 0-255 scale

# Convolutions per block up to the tap relu5_1: VGG19 (2, 2, 4, 4, 1), VGG-16 (2, 2, 3, 3, 1).
_VGG19_BLOCKS = (2, 2, 4, 4, 1)
_VGG16_BLOCKS = (2, 2, 3, 3, 1)
_WIDTHS = (64, 128, 256, 512, 512)
# The smallest image VGG19's last tap sees: relu5_1 comes after four 2x poolings.
VGG19_MIN_SIZE = 2 ** (len(_VGG19_BLOCKS) - 1)


def _max_pool(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _vgg_taps(module: nn.Module, x: jax.Array, blocks: tuple[int, ...], name_of) -> list[jax.Array]:
  taps = []
  for block, count in enumerate(blocks):
    if block > 0:
      x = _max_pool(x)
    for j in range(count):
      x = nn.relu(
        Conv(_WIDTHS[block], (3, 3), padding=1, dtype=module.dtype, name=name_of(block, j))(x)
      )
      if j == 0:
        taps.append(x)
  return taps


class VGG19(nn.Module):
  """ImageNet-normalised input; taps relu{1..5}_1 (64, 128, 256, 512, 512 channels)."""

  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    x = (images - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
    torch_index = {}
    index = 0
    for block, count in enumerate(_VGG19_BLOCKS):
      for j in range(count):
        torch_index[(block, j)] = index
        index += 2  # conv, relu
      index += 1  # max pool
    return _vgg_taps(self, x, _VGG19_BLOCKS, lambda b, j: f"features_{torch_index[(b, j)]}")


class VGGFace(nn.Module):
  """VGG-16 trained on faces; input ``x * 255 - mean`` (RGB); taps relu{1..5}_1."""

  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, images: jax.Array) -> list[jax.Array]:
    x = images * 255 - jnp.asarray(VGGFACE_MEAN)
    return _vgg_taps(self, x, _VGG16_BLOCKS, lambda b, j: f"conv{b + 1}_{j + 1}")
