"""Patch discriminator of the reference (architecture.md 8): spectral norm, instance norm, no padding.

``MultiScaleDiscriminator`` holds one ``Discriminator`` per image scale (vox-256: scale 1 only),
named like the reference's ``discs.{scale}`` (``'.'`` in a scale becomes ``'-'``). It returns, per
scale, the feature maps of every down block (for feature matching) and the patch prediction map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

from mmfa_jax.ops.layers import Conv, InstanceNorm, avg_pool

Dtype = Any


def scale_name(scale: float) -> str:
  """The reference's ModuleDict key for a scale: ``str(scale).replace('.', '-')`` of the YAML value
  (whole scales are integers there: 1 -> '1', 0.5 -> '0-5')."""
  scale = float(scale)
  return str(int(scale)) if scale.is_integer() else str(scale).replace(".", "-")


class DiscriminatorBlock(nn.Module):
  """Conv k4 no padding (spectral norm) -> [InstanceNorm affine] -> LeakyReLU 0.2 -> [AvgPool 2]."""

  features: int
  norm: bool = False
  pool: bool = False
  spectral_norm: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = Conv(
      self.features, (4, 4), spectral_norm=self.spectral_norm, dtype=self.dtype, name="conv"
    )(x, train)
    if self.norm:
      x = InstanceNorm(affine=True, dtype=self.dtype, name="norm")(x)
    x = nn.leaky_relu(x, 0.2)
    return avg_pool(x, (2, 2)) if self.pool else x


class Discriminator(nn.Module):
  """Image ``(B, H, W, 3)`` -> (feature maps of ``down_blocks_{i}``, ``(B, h, w, 1)`` prediction).

  Block i maps to ``min(max_features, block_expansion * 2 ** (i + 1))`` channels; instance norm
  from block 1 on; average pooling after all but the last; then ``conv`` 1x1 to 1 (spectral norm).
  """

  block_expansion: int = 32
  num_blocks: int = 4
  max_features: int = 512
  spectral_norm: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[list[jax.Array], jax.Array]:
    feature_maps = []
    for i in range(self.num_blocks):
      x = DiscriminatorBlock(
        min(self.max_features, self.block_expansion * 2 ** (i + 1)),
        norm=i != 0,
        pool=i != self.num_blocks - 1,
        spectral_norm=self.spectral_norm,
        dtype=self.dtype,
        name=f"down_blocks_{i}",
      )(x, train)
      feature_maps.append(x)
    prediction = Conv(1, (1, 1), spectral_norm=self.spectral_norm, dtype=self.dtype, name="conv")(
      x, train
    )
    return feature_maps, prediction


class MultiScaleDiscriminator(nn.Module):
  """``{scale: image}`` (e.g. from ``ops.image_pyramid``) -> ``{scale: (feature_maps, prediction)}``."""

  scales: Sequence[float] = (1,)
  block_expansion: int = 32
  num_blocks: int = 4
  max_features: int = 512
  spectral_norm: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(
    self, images: Mapping[float, jax.Array], train: bool = False
  ) -> dict[float, tuple[list[jax.Array], jax.Array]]:
    outputs = {}
    for scale in self.scales:
      disc = Discriminator(
        self.block_expansion,
        self.num_blocks,
        self.max_features,
        self.spectral_norm,
        self.dtype,
        name=f"discs_{scale_name(scale)}",
      )
      outputs[float(scale)] = disc(images[float(scale)], train)
    return outputs
