"""Hopenet (deep-head-pose, Ruiz et al. 2018): frozen head-pose network (architecture.md 10).

ResNet-50 (torchvision layout: Bottleneck blocks [3, 4, 6, 3], stride on the 3x3 conv, 1x1
``downsample`` conv + BN on each layer's first block), AvgPool 7 on 224 x 224 input, then three
66-bin heads. Angles are decoded with the reference's softmax expectation (``bins * 3 - 99``,
degrees). ``prepare_hopenet_input`` reproduces the reference's preparation: bilinear resize to
224 without anti-aliasing (half-pixel centres, = PyTorch ``align_corners=False``), then ImageNet
normalisation. The reference's vestigial ``fc_finetune`` (2051 -> 3) is never used and not built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.ops.layers import BatchNorm, Conv, Dense, max_pool
from mmfa_jax.ops.rotation import bins_to_degrees

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOPENET_SIZE = 224


def prepare_hopenet_input(images: jax.Array, size: int | None = HOPENET_SIZE) -> jax.Array:
  """``(B, H, W, 3)`` RGB in [0, 1] -> ``(B, size, size, 3)`` ImageNet-normalised (bilinear, no
  antialias); ``size=None`` keeps the input size."""
  batch, _, _, channels = images.shape
  resized = images.astype(jnp.float32)
  if size is not None:
    resized = jax.image.resize(resized, (batch, size, size, channels), "bilinear", antialias=False)
  return (resized - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (expansion 4): 1x1, 3x3 (stride), 1x1, no conv biases."""

  width: int
  stride: int = 1
  downsample: bool = False
  frozen: bool = True  # BatchNorm with running statistics
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    def bn(name: str, h: jax.Array) -> jax.Array:
      return BatchNorm(use_running_average=self.frozen, dtype=self.dtype, name=name)(h)

    def conv(features: int, kernel: int, stride: int, padding: int, name: str) -> Conv:
      return Conv(
        features, (kernel, kernel), stride, padding, use_bias=False, dtype=self.dtype, name=name
      )

    h = nn.relu(bn("bn1", conv(self.width, 1, 1, 0, "conv1")(x)))
    h = nn.relu(bn("bn2", conv(self.width, 3, self.stride, 1, "conv2")(h)))
    h = bn("bn3", conv(self.width * 4, 1, 1, 0, "conv3")(h))
    shortcut = x
    if self.downsample:
      shortcut = bn("downsample_bn", conv(self.width * 4, 1, self.stride, 0, "downsample_conv")(x))
    return nn.relu(h + shortcut)


class Hopenet(nn.Module):
  """Prepared ``(B, 224, 224, 3)`` input -> ``{'yaw', 'pitch', 'roll'}`` 66-bin logits.

  The pretrained network is always in inference mode (frozen BatchNorm statistics).
  ``trainable=True`` makes a pose network learned from scratch (synthetic experiments without
  pretrained weights): BatchNorm then uses batch statistics when ``train`` is set.
  ``angles`` gives degrees.
  """

  layers: Sequence[int] = (3, 4, 6, 3)
  widths: Sequence[int] = (64, 128, 256, 512)
  num_bins: int = 66
  trainable: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    frozen = not (self.trainable and train)
    x = Conv(self.widths[0], (7, 7), 2, 3, use_bias=False, dtype=self.dtype, name="conv1")(x)
    x = nn.relu(BatchNorm(use_running_average=frozen, dtype=self.dtype, name="bn1")(x))
    x = max_pool(x, (3, 3), (2, 2), 1)
    for layer, (count, width) in enumerate(zip(self.layers, self.widths), start=1):
      for block in range(count):
        stride = 2 if block == 0 and layer > 1 else 1
        x = Bottleneck(
          width,
          stride,
          downsample=block == 0,
          frozen=frozen,
          dtype=self.dtype,
          name=f"layer{layer}_{block}",
        )(x)
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # AvgPool2d(7) on the 7x7 map
    return {
      name: Dense(self.num_bins, dtype=self.dtype, name=f"fc_{name}")(features).astype(jnp.float32)
      for name in ("yaw", "pitch", "roll")
    }

  def angles(self, images: jax.Array) -> dict[str, jax.Array]:
    """Raw ``(B, H, W, 3)`` images in [0, 1] -> yaw, pitch, roll in degrees, each ``(B,)``."""
    logits = self(prepare_hopenet_input(images))
    return {name: bins_to_degrees(value) for name, value in logits.items()}


def hopenet_head_pose(network: Hopenet, variables: Any, images: jax.Array) -> dict[str, jax.Array]:
  """Head pose of ``(B, H, W, 3)`` frames in [0, 1] by a frozen Hopenet (``Hopenet.angles``, inference
  mode): ``{'yaw', 'pitch', 'roll'}``, ``(B,)`` float32 degrees,
  gradients stopped."""
  return jax.lax.stop_gradient(network.apply(variables, images, method=Hopenet.angles))
