"""The FID Inception network (pytorch-fid's ``InceptionV3``, ``use_fid_inception=True``): images ->
2048-d pool features, the statistics behind the Frechet Inception Distance.

This is the TensorFlow FID graph (``inception-2015-12-05``) as pytorch-fid ports it: torchvision's
Inception v3 layout with the FID patches, read up to the final average pool (output block 3):

* input ``(B, H, W, 3)`` in [0, 1], bilinearly resized to 299 x 299 with half-pixel centres and no
  antialias (= ``F.interpolate(..., align_corners=False)``), then mapped to [-1, 1] (``2 x - 1``);
* every convolution is a ``BasicConv2d``: conv without bias, BatchNorm (eps 1e-3, running
  statistics) and ReLU;
* stem ``Conv2d_1a_3x3`` (stride 2), ``Conv2d_2a_3x3``, ``Conv2d_2b_3x3`` (padding 1), max pool 3/2,
  ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3``, max pool 3/2;
* ``Mixed_5b``..``5d`` (A, pool features 32/64/64), ``Mixed_6a`` (B), ``Mixed_6b``..``6e`` (C,
  7x7 channels 128/160/160/192), ``Mixed_7a`` (D), ``Mixed_7b`` (E with average pool),
  ``Mixed_7c`` (E with *max* pool: the FID graph's quirk);
* the FID patch: every 3x3 stride-1 average pool in a pool branch excludes the zero padding from
  its mean (``count_include_pad=False``);
* global average pool -> ``(B, 2048)``. The 1008-way ``fc`` of the weights file is not used.

Each block concatenates its branches along channels in torchvision's order (1x1, 5x5 / 3x3 / 7x7,
double 3x3 / 7x7, pool). Module names equal the PyTorch attribute names, so the converter maps
``Mixed_5b/branch1x1/conv/kernel`` to ``Mixed_5b.branch1x1.conv.weight`` one to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.ops.layers import BatchNorm, Conv, PaddingLike, max_pool

Dtype = Any

INCEPTION_SIZE = 299  # the network's input side (pixels)
FEATURE_DIM = 2048  # pool feature width
BATCHNORM_EPS = 1e-3


def prepare_inception_input(images: jax.Array, size: int = INCEPTION_SIZE) -> jax.Array:
  """``(B, H, W, 3)`` RGB in [0, 1] -> ``(B, size, size, 3)`` float32 in [-1, 1].

  Bilinear resize without antialias (half-pixel centres, edge samples clamped: PyTorch's
  ``F.interpolate(mode='bilinear', align_corners=False)``), then ``2 x - 1``.
  """
  batch, _, _, channels = images.shape
  resized = jax.image.resize(
    images.astype(jnp.float32), (batch, size, size, channels), "bilinear", antialias=False
  )  # (B, size, size, 3)
  return 2.0 * resized - 1.0


def avg_pool_excluding_padding(inputs: jax.Array, window: int = 3, padding: int = 1) -> jax.Array:
  """Stride-1 average pool over ``(B, H, W, C)`` with zero padding left out of each mean (PyTorch
  ``F.avg_pool2d(x, window, stride=1, padding=padding, count_include_pad=False)``)."""
  pads = ((padding, padding), (padding, padding))
  return nn.avg_pool(
    inputs, (window, window), strides=(1, 1), padding=pads, count_include_pad=False
  )  # (B, H, W, C) for window = 2 * padding + 1


class BasicConv(nn.Module):
  """torchvision's ``BasicConv2d``: ``conv`` (no bias) -> ``bn`` (eps 1e-3, running stats) -> ReLU."""

  features: int
  kernel_size: int | Sequence[int]
  strides: int = 1
  padding: PaddingLike = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = Conv(
      self.features,
      self.kernel_size,  # an int is square
      self.strides,
      self.padding,
      use_bias=False,
      dtype=self.dtype,
      name="conv",
    )(x)
    x = BatchNorm(use_running_average=True, epsilon=BATCHNORM_EPS, dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _conv(
  parent: nn.Module,
  name: str,
  features: int,
  kernel_size: int | Sequence[int],
  strides: int = 1,
  padding: PaddingLike = 0,
) -> BasicConv:
  """A ``BasicConv`` child of ``parent`` (inside its compact ``__call__``) in ``parent.dtype``."""
  return BasicConv(features, kernel_size, strides, padding, dtype=parent.dtype, name=name)


class InceptionA(nn.Module):
  """FID ``Mixed_5b..5d``: 64 (1x1) + 64 (5x5) + 96 (double 3x3) + ``pool_features`` channels."""

  pool_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch1x1 = _conv(self, "branch1x1", 64, 1)(x)
    branch5x5 = _conv(self, "branch5x5_1", 48, 1)(x)
    branch5x5 = _conv(self, "branch5x5_2", 64, 5, padding=2)(branch5x5)
    branch3x3dbl = _conv(self, "branch3x3dbl_1", 64, 1)(x)
    branch3x3dbl = _conv(self, "branch3x3dbl_2", 96, 3, padding=1)(branch3x3dbl)
    branch3x3dbl = _conv(self, "branch3x3dbl_3", 96, 3, padding=1)(branch3x3dbl)
    branch_pool = _conv(self, "branch_pool", self.pool_features, 1)(avg_pool_excluding_padding(x))
    # (B, H, W, 224 + pool_features)
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], axis=-1)


class InceptionB(nn.Module):
  """``Mixed_6a`` (35 -> 17): 384 (3x3 s2) + 96 (double 3x3, s2) + input channels (max pool)."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = _conv(self, "branch3x3", 384, 3, strides=2)(x)
    branch3x3dbl = _conv(self, "branch3x3dbl_1", 64, 1)(x)
    branch3x3dbl = _conv(self, "branch3x3dbl_2", 96, 3, padding=1)(branch3x3dbl)
    branch3x3dbl = _conv(self, "branch3x3dbl_3", 96, 3, strides=2)(branch3x3dbl)
    branch_pool = max_pool(x, (3, 3), (2, 2), 0)
    # (B, (H - 3) // 2 + 1, (W - 3) // 2 + 1, 480 + C)
    return jnp.concatenate([branch3x3, branch3x3dbl, branch_pool], axis=-1)


class InceptionC(nn.Module):
  """FID ``Mixed_6b..6e`` (17 x 17, 768 -> 768): factorised 7x7 branches of width ``channels_7x7``."""

  channels_7x7: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    along_w = {"kernel_size": (1, 7), "padding": (0, 3)}
    along_h = {"kernel_size": (7, 1), "padding": (3, 0)}
    branch1x1 = _conv(self, "branch1x1", 192, 1)(x)
    branch7x7 = _conv(self, "branch7x7_1", c7, 1)(x)
    branch7x7 = _conv(self, "branch7x7_2", c7, **along_w)(branch7x7)
    branch7x7 = _conv(self, "branch7x7_3", 192, **along_h)(branch7x7)
    branch7x7dbl = _conv(self, "branch7x7dbl_1", c7, 1)(x)
    branch7x7dbl = _conv(self, "branch7x7dbl_2", c7, **along_h)(branch7x7dbl)
    branch7x7dbl = _conv(self, "branch7x7dbl_3", c7, **along_w)(branch7x7dbl)
    branch7x7dbl = _conv(self, "branch7x7dbl_4", c7, **along_h)(branch7x7dbl)
    branch7x7dbl = _conv(self, "branch7x7dbl_5", 192, **along_w)(branch7x7dbl)
    branch_pool = _conv(self, "branch_pool", 192, 1)(avg_pool_excluding_padding(x))
    # (B, H, W, 768)
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], axis=-1)


class InceptionD(nn.Module):
  """``Mixed_7a`` (17 -> 8): 320 (3x3 s2) + 192 (7x7 then 3x3 s2) + input channels (max pool)."""

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    branch3x3 = _conv(self, "branch3x3_1", 192, 1)(x)
    branch3x3 = _conv(self, "branch3x3_2", 320, 3, strides=2)(branch3x3)
    branch7x7x3 = _conv(self, "branch7x7x3_1", 192, 1)(x)
    branch7x7x3 = _conv(self, "branch7x7x3_2", 192, (1, 7), 1, (0, 3))(branch7x7x3)
    branch7x7x3 = _conv(self, "branch7x7x3_3", 192, (7, 1), 1, (3, 0))(branch7x7x3)
    branch7x7x3 = _conv(self, "branch7x7x3_4", 192, 3, strides=2)(branch7x7x3)
    branch_pool = max_pool(x, (3, 3), (2, 2), 0)
    # (B, (H - 3) // 2 + 1, (W - 3) // 2 + 1, 512 + C)
    return jnp.concatenate([branch3x3, branch7x7x3, branch_pool], axis=-1)


class InceptionE(nn.Module):
  """``Mixed_7b`` / ``Mixed_7c`` (8 x 8 -> 2048): 320 + 2 x 384 + 2 x 384 + 192 channels.

  ``pool``: ``'avg'`` (``Mixed_7b``, padding excluded from the mean) or ``'max'`` (``Mixed_7c``,
  the FID graph's max pool, 3x3 stride 1 padding 1).
  """

  pool: str = "avg"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.pool not in ("avg", "max"):
      raise ValueError(f"InceptionE pool must be 'avg' or 'max', got {self.pool!r}")
    branch1x1 = _conv(self, "branch1x1", 320, 1)(x)
    branch3x3 = _conv(self, "branch3x3_1", 384, 1)(x)
    branch3x3 = jnp.concatenate(
      [
        _conv(self, "branch3x3_2a", 384, (1, 3), 1, (0, 1))(branch3x3),
        _conv(self, "branch3x3_2b", 384, (3, 1), 1, (1, 0))(branch3x3),
      ],
      axis=-1,
    )  # (B, H, W, 768)
    branch3x3dbl = _conv(self, "branch3x3dbl_1", 448, 1)(x)
    branch3x3dbl = _conv(self, "branch3x3dbl_2", 384, 3, padding=1)(branch3x3dbl)
    branch3x3dbl = jnp.concatenate(
      [
        _conv(self, "branch3x3dbl_3a", 384, (1, 3), 1, (0, 1))(branch3x3dbl),
        _conv(self, "branch3x3dbl_3b", 384, (3, 1), 1, (1, 0))(branch3x3dbl),
      ],
      axis=-1,
    )  # (B, H, W, 768)
    if self.pool == "avg":
      pooled = avg_pool_excluding_padding(x)
    else:
      pooled = max_pool(x, (3, 3), (1, 1), 1)
    branch_pool = _conv(self, "branch_pool", 192, 1)(pooled)
    # (B, H, W, 2048)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], axis=-1)


class FIDInception(nn.Module):
  """``(B, H, W, 3)`` images in [0, 1] (any size) -> ``(B, 2048)`` float32 FID pool features.

  Always in inference mode: BatchNorm uses the ``batch_stats`` running statistics. ``dtype`` is the
  computation dtype (parameters stay float32; the resize and the final mean run in float32).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = prepare_inception_input(images).astype(self.dtype)  # (B, 299, 299, 3)
    x = _conv(self, "Conv2d_1a_3x3", 32, 3, strides=2)(x)  # (B, 149, 149, 32)
    x = _conv(self, "Conv2d_2a_3x3", 32, 3)(x)  # (B, 147, 147, 32)
    x = _conv(self, "Conv2d_2b_3x3", 64, 3, padding=1)(x)  # (B, 147, 147, 64)
    x = max_pool(x, (3, 3), (2, 2), 0)  # (B, 73, 73, 64)
    x = _conv(self, "Conv2d_3b_1x1", 80, 1)(x)  # (B, 73, 73, 80)
    x = _conv(self, "Conv2d_4a_3x3", 192, 3)(x)  # (B, 71, 71, 192)
    x = max_pool(x, (3, 3), (2, 2), 0)  # (B, 35, 35, 192)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, dtype=self.dtype, name=name)(x)  # (B, 35, 35, 256 / 288)
    x = InceptionB(dtype=self.dtype, name="Mixed_6a")(x)  # (B, 17, 17, 768)
    for name, channels_7x7 in (
      ("Mixed_6b", 128),
      ("Mixed_6c", 160),
      ("Mixed_6d", 160),
      ("Mixed_6e", 192),
    ):
      x = InceptionC(channels_7x7, dtype=self.dtype, name=name)(x)  # (B, 17, 17, 768)
    x = InceptionD(dtype=self.dtype, name="Mixed_7a")(x)  # (B, 8, 8, 1280)
    x = InceptionE("avg", dtype=self.dtype, name="Mixed_7b")(x)  # (B, 8, 8, 2048)
    x = InceptionE("max", dtype=self.dtype, name="Mixed_7c")(x)  # (B, 8, 8, 2048)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # (B, 2048): adaptive average pool to 1x1
