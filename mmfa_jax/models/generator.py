"""Occlusion-aware generators (architecture.md 7.1, 7.3, 7.4; mmfa_delta.md 6).

All three share the appearance encoder (source image -> ``(B, D, h, w, C)`` feature volume) and the
warping front: dense motion, 3D grid_sample of the volume by the deformation, reshape to 2D
(``c * D + d``), ``third`` (SameBlock2d, LeakyReLU 0.01), ``fourth`` (1x1 conv), multiplication by
the occlusion map. Decoders:

* ``OcclusionAwareGenerator`` (the reference's original): 2D ResBlocks, UpBlocks, 7x7 conv.
* ``SPADEGenerator`` (the released face-vid2vid model): ``SPADEDecoder`` with spectral norm.
* ``MultiScaleGenerator`` (MMFA): an image output at every resolution, each fed back (concatenated)
  into the next UpBlock; outputs at 64, 128 and 256 for vox-256.

Submodule names equal the reference's state_dict names (``first``, ``down_blocks.{i}``, ``second``,
``resblocks_3d.3dr{i}``, ``dense_motion_network``, ``third``, ``fourth``, ``resblocks_2d.2dr{i}``,
``up_blocks.{i}``, ``final``, ``decoder.*``). ``encode`` and ``decode`` are separate so that one
source volume serves many driving frames.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.blocks import (
  DownBlock,
  ResBlockStack,
  SameBlock2d,
  UpBlock,
  channels_to_depth,
  depth_to_channels,
)
from mmfa_jax.models.dense_motion import DenseMotionNetwork
from mmfa_jax.ops.grid_sample import grid_sample_3d
from mmfa_jax.ops.layers import Conv, InstanceNorm, upsample_nearest

Dtype = Any


class _OcclusionAwareBase(nn.Module):
  """Appearance encoder + warping front shared by the generators (see the module docstring).

  Subclasses add their decoder: ``setup_decoder()`` creates its layers (called from ``setup``) and
  ``decode_2d(x, train)`` maps the occluded 2D feature to ``{'prediction': ...}``.

  Attributes:
    block_expansion, max_features, num_down_blocks: encoder widths (vox-256: 64, 512, 2).
    reshape_channels, reshape_depth: volume channels C and depth D (C * D = max_features).
    num_resblocks: 3D ResBlocks on the volume (and 2D ones in the original decoder).
    estimate_occlusion_map: multiply the warped feature by the dense motion's occlusion map.
    first_kernel_size: 7 (original) or 3 (SPADE) for ``first``.
    dense_motion: keyword arguments of ``DenseMotionNetwork``.
  """

  block_expansion: int = 64
  max_features: int = 512
  num_down_blocks: int = 2
  reshape_channels: int = 32
  reshape_depth: int = 16
  num_resblocks: int = 6
  estimate_occlusion_map: bool = True
  first_kernel_size: int = 7
  dense_motion: dict[str, Any] | None = None
  dtype: Dtype | None = None

  def setup(self) -> None:
    be, n = self.block_expansion, self.num_down_blocks
    k = self.first_kernel_size
    self.first = SameBlock2d(be, k, k // 2, dtype=self.dtype)
    self.down_blocks = [
      DownBlock(min(self.max_features, be * 2 ** (i + 1)), ndim=2, dtype=self.dtype)
      for i in range(n)
    ]
    self.second = Conv(self.max_features, (1, 1), dtype=self.dtype)
    self.resblocks_3d = ResBlockStack(self.num_resblocks, 3, "3dr", dtype=self.dtype)
    self.dense_motion_network = DenseMotionNetwork(
      **(self.dense_motion or {}),
      estimate_occlusion_map=self.estimate_occlusion_map,
      dtype=self.dtype,
    )
    out_features = be * 2**n
    self.third = SameBlock2d(out_features, 3, 1, leaky_relu=True, dtype=self.dtype)
    self.fourth = Conv(out_features, (1, 1), dtype=self.dtype)
    self.setup_decoder()

  def encode(self, source: jax.Array, train: bool = False) -> jax.Array:
    """Source image ``(B, H, W, 3)`` in [0, 1] -> appearance volume ``(B, D, h, w, C)``."""
    x = self.first(source, train)
    for block in self.down_blocks:
      x = block(x, train)
    x = self.second(x)  # (B, h, w, C * D)
    return self.resblocks_3d(channels_to_depth(x, self.reshape_depth), train)

  def warp(
    self, feature_3d: jax.Array, kp_source: jax.Array, kp_driving: jax.Array, train: bool
  ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Dense motion, warp, reshape to 2D, third, fourth, occlusion: ``(B, h, w, 4 * be)``."""
    motion = self.dense_motion_network(feature_3d, kp_source, kp_driving, train)
    warped = grid_sample_3d(feature_3d, motion["deformation"].astype(jnp.float32))
    x = self.fourth(self.third(depth_to_channels(warped), train))
    if self.estimate_occlusion_map:
      x = x * motion["occlusion_map"].astype(x.dtype)
    return x, motion

  def decode(
    self, feature_3d: jax.Array, kp_source: jax.Array, kp_driving: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Appearance volume + keypoints -> ``prediction`` ``(B, H, W, 3)`` and the motion outputs."""
    x, motion = self.warp(feature_3d, kp_source, kp_driving, train)
    return dict(motion, **self.decode_2d(x, train))

  def __call__(
    self, source: jax.Array, kp_source: jax.Array, kp_driving: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    return self.decode(self.encode(source, train), kp_source, kp_driving, train)


class OcclusionAwareGenerator(_OcclusionAwareBase):
  """The reference's original generator (architecture.md 7.3; 53,101,392 parameters at vox-256)."""

  def setup_decoder(self) -> None:
    be, n = self.block_expansion, self.num_down_blocks
    self.resblocks_2d = ResBlockStack(self.num_resblocks, 2, "2dr", dtype=self.dtype)
    self.up_blocks = [
      UpBlock(max(be, be * 2 ** (n - i - 1)), ndim=2, dtype=self.dtype) for i in range(n)
    ]
    self.final = Conv(3, (7, 7), padding=3, dtype=self.dtype)

  def decode_2d(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    x = self.resblocks_2d(x, train)
    for block in self.up_blocks:
      x = block(x, train)
    return {"prediction": jax.nn.sigmoid(self.final(x).astype(jnp.float32))}


class SPADE(nn.Module):
  """``norm(x) * (1 + gamma(seg)) + beta(seg)``: parameter-free InstanceNorm, seg resized (nearest)
  to x, ``mlp_shared.0`` 3x3 conv + ReLU, ``mlp_gamma`` and ``mlp_beta`` 3x3 convs."""

  features: int
  hidden: int = 128
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, segmap: jax.Array) -> jax.Array:
    normalized = InstanceNorm(dtype=self.dtype)(x)
    factor = x.shape[1] // segmap.shape[1]
    if factor > 1:
      segmap = upsample_nearest(segmap, (factor, factor))

    def conv(features: int, name: str) -> Conv:
      return Conv(features, (3, 3), padding=1, dtype=self.dtype, name=name)

    actv = nn.relu(conv(self.hidden, "mlp_shared_0")(segmap))
    return normalized * (1 + conv(self.features, "mlp_gamma")(actv)) + conv(
      self.features, "mlp_beta"
    )(actv)


class SPADEResnetBlock(nn.Module):
  """SPADE residual block (architecture.md 2): spectral-norm convs, LeakyReLU 0.2, learned 1x1
  shortcut ``conv_s`` (no bias) with its own SPADE when the width changes."""

  features: int
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, segmap: jax.Array, train: bool = False) -> jax.Array:
    in_features = x.shape[-1]
    middle = min(in_features, self.features)

    def conv(features: int, kernel: int, name: str, use_bias: bool = True) -> Conv:
      pad = kernel // 2
      return Conv(
        features,
        (kernel, kernel),
        padding=pad,
        use_bias=use_bias,
        spectral_norm=True,
        dtype=self.dtype,
        name=name,
      )

    def spade(features: int, name: str) -> SPADE:
      return SPADE(features, dtype=self.dtype, name=name)

    shortcut = x
    if in_features != self.features:
      shortcut = conv(self.features, 1, "conv_s", use_bias=False)(
        spade(in_features, "norm_s")(x, segmap), train
      )
    dx = conv(middle, 3, "conv_0")(
      nn.leaky_relu(spade(in_features, "norm_0")(x, segmap), 0.2), train
    )
    dx = conv(self.features, 3, "conv_1")(
      nn.leaky_relu(spade(middle, "norm_1")(dx, segmap), 0.2), train
    )
    return shortcut + dx


class SPADEDecoder(nn.Module):
  """The released model's decoder (architecture.md 7.4): ``fc`` 3x3 to 2 * in, ``G_middle_{0..5}``,
  nearest x2, ``up_0`` (to in), nearest x2, ``up_1`` (to ``out_features``), LeakyReLU 0.2,
  ``conv_img`` 3x3 to 3, sigmoid. The segmentation map of every SPADE is the decoder's input."""

  out_features: int = 64
  num_middle: int = 6
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, feature: jax.Array, train: bool = False) -> jax.Array:
    in_features = feature.shape[-1]
    x = Conv(2 * in_features, (3, 3), padding=1, dtype=self.dtype, name="fc")(feature)
    for i in range(self.num_middle):
      x = SPADEResnetBlock(2 * in_features, dtype=self.dtype, name=f"G_middle_{i}")(
        x, feature, train
      )
    x = upsample_nearest(x, (2, 2))
    x = SPADEResnetBlock(in_features, dtype=self.dtype, name="up_0")(x, feature, train)
    x = upsample_nearest(x, (2, 2))
    x = SPADEResnetBlock(self.out_features, dtype=self.dtype, name="up_1")(x, feature, train)
    x = Conv(3, (3, 3), padding=1, dtype=self.dtype, name="conv_img")(nn.leaky_relu(x, 0.2))
    return jax.nn.sigmoid(x.astype(jnp.float32))


class SPADEGenerator(_OcclusionAwareBase):
  """The reference's SPADE generator (architecture.md 7.4; 100,988,176 parameters at vox-256).

  Use ``first_kernel_size=3`` as the reference does (``spade_generator_config`` sets it).
  """

  first_kernel_size: int = 3

  def setup_decoder(self) -> None:
    self.decoder = SPADEDecoder(out_features=self.block_expansion, dtype=self.dtype)

  def decode_2d(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    return {"prediction": self.decoder(x, train)}


class MultiScaleGenerator(_OcclusionAwareBase):
  """MMFA's multi-scale decoder (mmfa_delta.md 6).

  Stage 0 at the volume resolution: ``resblocks_2d`` (``num_resblocks`` ResBlocks) -> F, ``to_image_0``
  (3x3 conv + sigmoid) -> O. Stage i >= 1: ``up_blocks_{i-1}`` (UpBlock2d on concat(F, O), halving
  the width) -> ``resblocks_up{i}`` (one ResBlock) -> F; the last stage's image comes from
  ``final`` (7x7 conv), the others from ``to_image_{i}``. Returns ``prediction`` (full size) and
  ``predictions`` ``{size: (B, size, size, 3)}`` (64, 128, 256 for vox-256).
  """

  def setup_decoder(self) -> None:
    be, n = self.block_expansion, self.num_down_blocks
    self.resblocks_2d = ResBlockStack(self.num_resblocks, 2, "2dr", dtype=self.dtype)
    self.up_blocks = [
      UpBlock(max(be, be * 2 ** (n - i - 1)), ndim=2, dtype=self.dtype) for i in range(n)
    ]
    self.stage_resblocks = {
      f"up{i}": ResBlockStack(1, 2, "2dr", dtype=self.dtype) for i in range(1, n + 1)
    }
    self.to_image = {str(i): Conv(3, (3, 3), padding=1, dtype=self.dtype) for i in range(n)}
    self.final = Conv(3, (7, 7), padding=3, dtype=self.dtype)

  def decode_2d(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    n = self.num_down_blocks
    predictions = {}
    x = self.resblocks_2d(x, train)
    for stage in range(n + 1):
      if stage > 0:
        x = self.stage_resblocks[f"up{stage}"](x, train)
      head = self.final if stage == n else self.to_image[str(stage)]
      image = jax.nn.sigmoid(head(x).astype(jnp.float32))  # (B, s, s, 3)
      predictions[image.shape[1]] = image
      if stage < n:
        x = self.up_blocks[stage](jnp.concatenate([x, image.astype(x.dtype)], axis=-1), train)
    return {"prediction": predictions[max(predictions)], "predictions": predictions}
