"""Canonical 3D keypoint detector (the reference's KPDetector, architecture.md 4)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.blocks import KPHourglass
from mmfa_jax.ops.grid_sample import make_coordinate_grid
from mmfa_jax.ops.keypoints import soft_argmax
from mmfa_jax.ops.layers import Conv
from mmfa_jax.ops.pyramid import antialias_downsample

Dtype = Any


class KPDetector(nn.Module):
  """Image ``(B, H, W, 3)`` in [0, 1] -> canonical keypoints ``(B, K, 3)`` (x, y, z in [-1, 1]).

  Anti-aliased downscale by ``scale_factor``, ``predictor`` (KPHourglass) to a
  ``(B, reshape_depth, h, w, block_expansion)`` volume, ``kp`` Conv3d k3 p1 to K logit volumes,
  softmax over each volume of ``logits / temperature``, keypoint = heat-weighted mean of the
  [-1, 1] grid. Returns ``{'value': (B, K, 3), 'heatmap': (B, D, h, w, K)}``.
  """

  num_kp: int = 15
  block_expansion: int = 32
  max_features: int = 1024
  num_blocks: int = 5
  reshape_channels: int = 16384
  reshape_depth: int = 16
  temperature: float = 0.1
  scale_factor: float = 0.25
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    x = antialias_downsample(image, self.scale_factor) if self.scale_factor != 1 else image
    feature = KPHourglass(
      block_expansion=self.block_expansion,
      reshape_features=self.reshape_channels,
      reshape_depth=self.reshape_depth,
      num_blocks=self.num_blocks,
      max_features=self.max_features,
      dtype=self.dtype,
      name="predictor",
    )(x, train)  # (B, D, h, w, block_expansion)
    logits = Conv(self.num_kp, (3, 3, 3), padding=1, dtype=self.dtype, name="kp")(feature)
    logits = logits.astype(jnp.float32)  # (B, D, h, w, K)
    grid = make_coordinate_grid(logits.shape[1:4])  # (D, h, w, 3)
    value, heatmap = soft_argmax(logits / self.temperature, grid)  # (B, K, 3), (B, D, h, w, K)
    return {"value": value, "heatmap": heatmap}
