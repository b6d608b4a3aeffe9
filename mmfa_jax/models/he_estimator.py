"""The reference's head-pose / expression estimator (HEEstimator, architecture.md 5).

Used by the face-vid2vid model variant and for checkpoint import. Its trunk is the ResBottleneck
stack that MMFA's scale/translation head reuses (``HETrunk``). Head names here mean what they say:
``fc_yaw`` predicts yaw. The reference's ``fc_roll`` actually predicts yaw and its ``fc_yaw`` roll
(issue #58 there); the converter swaps them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.blocks import BottleneckStack, ResBottleneck
from mmfa_jax.ops.layers import BatchNorm, Conv, Dense, max_pool

Dtype = Any


class HETrunk(nn.Module):
  """Image ``(B, H, W, 3)`` -> pooled ``(B, widths[-1])`` features.

  conv1 7x7 s2 p3 (-> block_expansion), norm1, ReLU, MaxPool 3 s2 p1; then for each stage s:
  a 1x1 conv ``conv{s+2}`` + ``norm{s+2}`` + ReLU to ``widths[s]``, a stride-2 ResBottleneck
  (stages after the first), and ``blocks[s]`` stride-1 ResBottlenecks; global average pool.
  Reference widths (256, 512, 1024, 2048) and blocks (3, 3, 5, 2): keys ``block1.b1_*``,
  ``block2`` (strided), ``block3.b3_*``, ``block4``, ``block5.b5_*``, ``block6``, ``block7.b7_*``.
  """

  block_expansion: int = 64
  widths: Sequence[int] = (256, 512, 1024, 2048)
  blocks: Sequence[int] = (3, 3, 5, 2)
  dtype: Dtype | None = None

  @nn.compact
  def __call__(
    self, image: jax.Array, train: bool = False, stage_map: int | None = None
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Pooled features; with ``stage_map`` s, also stage s's feature map ``(B, h, w, widths[s])``."""

    def conv_bn_relu(index: int, features: int, x: jax.Array, **conv_kwargs: Any) -> jax.Array:
      x = Conv(features, dtype=self.dtype, name=f"conv{index}", **conv_kwargs)(x)
      x = BatchNorm(dtype=self.dtype, name=f"norm{index}")(x, use_running_average=not train)
      return nn.relu(x)

    x = conv_bn_relu(1, self.block_expansion, image, kernel_size=(7, 7), strides=2, padding=3)
    x = max_pool(x, (3, 3), (2, 2), 1)
    block_index = 1
    maps = []
    for stage, (width, count) in enumerate(zip(self.widths, self.blocks)):
      x = conv_bn_relu(stage + 2, width, x, kernel_size=(1, 1))
      if stage > 0:
        x = ResBottleneck(stride=2, dtype=self.dtype, name=f"block{block_index}")(x, train)
        block_index += 1
      x = BottleneckStack(
        count, prefix=f"b{block_index}", dtype=self.dtype, name=f"block{block_index}"
      )(x, train)
      block_index += 1
      maps.append(x)
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # (B, widths[-1])
    return pooled if stage_map is None else (pooled, maps[stage_map])


class HEEstimator(nn.Module):
  """Image -> ``{'yaw', 'pitch', 'roll'}`` 66-bin logits, ``'t'`` (B, 3), ``'exp'`` (B, 3K)."""

  block_expansion: int = 64
  widths: Sequence[int] = (256, 512, 1024, 2048)
  blocks: Sequence[int] = (3, 3, 5, 2)
  num_kp: int = 15
  num_bins: int = 66
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    features = HETrunk(self.block_expansion, self.widths, self.blocks, self.dtype, name="trunk")(
      image, train
    )
    heads = {"yaw": self.num_bins, "pitch": self.num_bins, "roll": self.num_bins}
    heads |= {"t": 3, "exp": 3 * self.num_kp}
    return {
      name: Dense(size, dtype=self.dtype, name=f"fc_{name}")(features).astype(jnp.float32)
      for name, size in heads.items()
    }
