"""Building blocks of the reference networks (architecture.md 2), channels-last.

Every block takes ``train`` at call time: BatchNorm uses batch statistics (and updates
``batch_stats``) when True and running statistics when False. Submodule names follow the
reference's state_dict names (``conv``, ``norm``, ``conv1`` ... ``norm4``, ``skip``), so the
converters in ``pretrained_converters`` map keys by name. ``ndim`` selects 2D ``(B, H, W, C)`` or
3D ``(B, D, H, W, C)`` blocks; 3D blocks never change the depth axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.ops.layers import BatchNorm, Conv, avg_pool, upsample_nearest

Dtype = Any


def _kernel(size: int, ndim: int) -> tuple[int, ...]:
  return (size,) * ndim


def _spatial_factor(factor: int, ndim: int) -> tuple[int, ...]:
  """(f, f) in 2D, (1, f, f) in 3D: the depth axis is never resampled."""
  return (factor,) * 2 if ndim == 2 else (1, factor, factor)


class DownBlock(nn.Module):
  """Conv k3 p1 -> BN -> ReLU -> AvgPool 2 over H and W (DownBlock2d / DownBlock3d)."""

  features: int
  ndim: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(self.features, _kernel(3, self.ndim), padding=1, dtype=self.dtype, name="conv")(x)
    x = nn.relu(BatchNorm(dtype=self.dtype, name="norm")(x, use_running_average=not train))
    return avg_pool(x, _spatial_factor(2, self.ndim))


class UpBlock(nn.Module):
  """Nearest x2 over H and W -> Conv k3 p1 -> BN -> ReLU (UpBlock2d / UpBlock3d)."""

  features: int
  ndim: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = upsample_nearest(x, _spatial_factor(2, self.ndim))
    x = Conv(self.features, _kernel(3, self.ndim), padding=1, dtype=self.dtype, name="conv")(x)
    return nn.relu(BatchNorm(dtype=self.dtype, name="norm")(x, use_running_average=not train))


class SameBlock2d(nn.Module):
  """Conv (kernel_size, padding) -> BN -> ReLU, or LeakyReLU(0.01) with ``leaky_relu``."""

  features: int
  kernel_size: int = 3
  padding: int = 1
  leaky_relu: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(
      self.features,
      _kernel(self.kernel_size, 2),
      padding=self.padding,
      dtype=self.dtype,
      name="conv",
    )(x)
    x = BatchNorm(dtype=self.dtype, name="norm")(x, use_running_average=not train)
    return nn.leaky_relu(x, 0.01) if self.leaky_relu else nn.relu(x)


class ResBlock(nn.Module):
  """Pre-activation residual block: BN-ReLU-Conv-BN-ReLU-Conv + input (ResBlock2d / 3d)."""

  ndim: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    h = nn.relu(BatchNorm(dtype=self.dtype, name="norm1")(x, use_running_average=not train))
    h = Conv(features, _kernel(3, self.ndim), padding=1, dtype=self.dtype, name="conv1")(h)
    h = nn.relu(BatchNorm(dtype=self.dtype, name="norm2")(h, use_running_average=not train))
    h = Conv(features, _kernel(3, self.ndim), padding=1, dtype=self.dtype, name="conv2")(h)
    return h + x


class ResBottleneck(nn.Module):
  """Constant-width post-activation bottleneck (width C, inner C/4, stride on the 3x3 conv).

  1x1 C->C/4, BN, ReLU, 3x3 (stride, p1), BN, ReLU, 1x1 C/4->C, BN; shortcut identity or, when
  stride != 1, 1x1 stride conv ``skip`` + BN ``norm4``; add; ReLU.
  """

  stride: int = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    features = x.shape[-1]
    inner = features // 4

    def norm(name: str, h: jax.Array) -> jax.Array:
      return BatchNorm(dtype=self.dtype, name=name)(h, use_running_average=not train)

    h = nn.relu(norm("norm1", Conv(inner, (1, 1), dtype=self.dtype, name="conv1")(x)))
    h = Conv(inner, (3, 3), strides=self.stride, padding=1, dtype=self.dtype, name="conv2")(h)
    h = nn.relu(norm("norm2", h))
    h = norm("norm3", Conv(features, (1, 1), dtype=self.dtype, name="conv3")(h))
    shortcut = x
    if self.stride != 1:
      shortcut = Conv(features, (1, 1), strides=self.stride, dtype=self.dtype, name="skip")(x)
      shortcut = norm("norm4", shortcut)
    return nn.relu(h + shortcut)


class BottleneckStack(nn.Module):
  """``count`` stride-1 ResBottlenecks named ``{prefix}_{i}`` (the reference's ``block1.b1_0``...)."""

  count: int
  prefix: str
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.count):
      x = ResBottleneck(dtype=self.dtype, name=f"{self.prefix}_{i}")(x, train)
    return x


def hourglass_channels(block_expansion: int, max_features: int, level: int) -> int:
  """``min(max_features, block_expansion * 2 ** level)``: the width at one hourglass level."""
  return min(max_features, block_expansion * 2**level)


class HourglassEncoder(nn.Module):
  """3D encoder: DownBlock3d i maps to ``hourglass_channels(i + 1)``; returns every level.

  Returns ``[input, out_0, ..., out_{n-1}]``.
  """

  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> list[jax.Array]:
    outputs = [x]
    for i in range(self.num_blocks):
      features = hourglass_channels(self.block_expansion, self.max_features, i + 1)
      x = DownBlock(features, ndim=3, dtype=self.dtype, name=f"down_blocks_{i}")(x, train)
      outputs.append(x)
    return outputs


class HourglassDecoder(nn.Module):
  """3D decoder: UpBlock3d to ``hourglass_channels(i)`` for i = n-1..0, each followed by
  concatenation with the matching encoder output; then Conv k3 p1 -> BN -> ReLU (``conv``, ``norm``)
  on ``block_expansion + in_features`` channels. Up block j (j = 0 first) is ``up_blocks_j``.
  """

  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, skips: Sequence[jax.Array], train: bool) -> jax.Array:
    skips = list(skips)
    x = skips.pop()
    for j, level in enumerate(reversed(range(self.num_blocks))):
      features = hourglass_channels(self.block_expansion, self.max_features, level)
      x = UpBlock(features, ndim=3, dtype=self.dtype, name=f"up_blocks_{j}")(x, train)
      x = jnp.concatenate([x, skips.pop()], axis=-1)  # torch: cat([out, skip], dim=1)
    x = Conv(x.shape[-1], (3, 3, 3), padding=1, dtype=self.dtype, name="conv")(x)
    return nn.relu(BatchNorm(dtype=self.dtype, name="norm")(x, use_running_average=not train))


class Hourglass(nn.Module):
  """3D U-Net (``encoder`` + ``decoder``); output has ``block_expansion + in_features`` channels."""

  block_expansion: int
  num_blocks: int = 3
  max_features: int = 256
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    kwargs = dict(
      block_expansion=self.block_expansion,
      num_blocks=self.num_blocks,
      max_features=self.max_features,
      dtype=self.dtype,
    )
    skips = HourglassEncoder(**kwargs, name="encoder")(x, train)
    return HourglassDecoder(**kwargs, name="decoder")(skips, train)


def channels_to_depth(x: jax.Array, depth: int) -> jax.Array:
  """(B, H, W, C * depth) -> (B, depth, H, W, C), flat channel index ``c * depth + d``."""
  batch, height, width, flat = x.shape
  x = x.reshape(batch, height, width, flat // depth, depth)  # (B, H, W, C, D)
  return jnp.transpose(x, (0, 4, 1, 2, 3))


def depth_to_channels(x: jax.Array) -> jax.Array:
  """(B, D, H, W, C) -> (B, H, W, C * D), flat channel index ``c * D + d`` (inverse of above)."""
  batch, depth, height, width, channels = x.shape
  return jnp.transpose(x, (0, 2, 3, 4, 1)).reshape(batch, height, width, channels * depth)


class KPHourglass(nn.Module):
  """2D encoder -> 1x1 conv -> reshape to a volume -> 3D decoder, no skips (architecture.md 2).

  Down block i (``down_blocks_i``) maps to ``min(max, be * 2 ** (i + 1))``; ``conv`` maps to
  ``reshape_features``; the volume has ``reshape_features / reshape_depth`` channels; up block i
  (``up_blocks_i``) maps to ``min(max, be * 2 ** (num_blocks - i - 1))``.
  """

  block_expansion: int
  reshape_features: int
  reshape_depth: int
  num_blocks: int = 3
  max_features: int = 256
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.num_blocks):
      features = hourglass_channels(self.block_expansion, self.max_features, i + 1)
      x = DownBlock(features, ndim=2, dtype=self.dtype, name=f"down_blocks_{i}")(x, train)
    x = Conv(self.reshape_features, (1, 1), dtype=self.dtype, name="conv")(x)
    x = channels_to_depth(x, self.reshape_depth)  # (B, D, h, w, reshape_features / D)
    for i in range(self.num_blocks):
      features = hourglass_channels(
        self.block_expansion, self.max_features, self.num_blocks - i - 1
      )
      x = UpBlock(features, ndim=3, dtype=self.dtype, name=f"up_blocks_{i}")(x, train)
    return x


class ResBlockStack(nn.Module):
  """``count`` ResBlocks named ``{prefix}{i}`` (the reference's ``resblocks_3d.3dr0``...)."""

  count: int
  ndim: int
  prefix: str
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i in range(self.count):
      x = ResBlock(ndim=self.ndim, dtype=self.dtype, name=f"{self.prefix}{i}")(x, train)
    return x
