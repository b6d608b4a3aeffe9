"""Dense motion network (architecture.md 7.2): 3D deformation field and occlusion map."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.blocks import Hourglass, depth_to_channels
from mmfa_jax.ops.grid_sample import coordinate_axis, grid_sample_separable, make_coordinate_grid
from mmfa_jax.ops.keypoints import heatmap_representation, slot_shifts, sparse_motions
from mmfa_jax.ops.layers import BatchNorm, Conv

Dtype = Any


class DenseMotionNetwork(nn.Module):
  """Appearance volume + source/driving keypoints -> deformation, mask and occlusion.

  Args (call):
    feature: ``(B, D, H, W, C)`` appearance volume (vox-256: 16 x 64 x 64 x 32).
    kp_source, kp_driving: ``(B, K, 3)`` keypoints (x, y, z).
    train: BatchNorm mode.

  ``mask_logit_scale`` multiplies the mask convolution's logits before the softmax (1 in the
  reference). Below 1 it slows how fast Adam moves the mask between slots: each step changes every
  weight by about the learning rate, so the logits move ``mask_logit_scale`` times as far.

  Returns a dict:
    ``deformation`` ``(B, D, H, W, 3)``: where each driving-frame voxel samples the source volume
    (x, y, z in [-1, 1]); ``mask`` ``(B, D, H, W, K + 1)`` softmax over slots (0 = background);
    ``occlusion_map`` ``(B, H, W, 1)`` in (0, 1) (absent when ``estimate_occlusion_map`` is off);
    and the intermediates ``sparse_motion`` ``(B, K + 1, D, H, W, 3)``, ``heatmap``
    ``(B, D, H, W, K + 1)`` and ``deformed_feature`` ``(B, K + 1, D, H, W, compress)``.
  """

  block_expansion: int = 32
  num_blocks: int = 5
  max_features: int = 1024
  compress: int = 4
  kp_variance: float = 0.01
  mask_logit_scale: float = 1.0
  estimate_occlusion_map: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(
    self, feature: jax.Array, kp_source: jax.Array, kp_driving: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    batch, depth, height, width, _ = feature.shape
    spatial = (depth, height, width)
    compressed = Conv(self.compress, (1, 1, 1), dtype=self.dtype, name="compress")(feature)
    compressed = BatchNorm(dtype=self.dtype, name="norm")(compressed, use_running_average=not train)
    compressed = nn.relu(compressed)  # (B, D, H, W, compress)

    motion = sparse_motions(kp_source, kp_driving, spatial)  # (B, K+1, D, H, W, 3)
    # Each slot's grid is the reference grid shifted by one vector: x depends on the W index only,
    # y on H, z on D. So each slot's trilinear warp is three small interpolation matrices, equal to
    # grid_sample at the full grid but with no gathers (and no scatter-adds in the gradient).
    shift = slot_shifts(kp_source, kp_driving)  # (B, K+1, 3), (x, y, z)
    axis_coords = [
      coordinate_axis(n) + shift[..., c, None] for c, n in enumerate((width, height, depth))
    ]  # x (B, K+1, W), y (B, K+1, H), z (B, K+1, D)
    # One warp per slot; the volume is shared by the slots, not repeated in memory.
    deformed = jax.vmap(grid_sample_separable, in_axes=(None, 1), out_axes=1)(
      compressed, axis_coords
    )  # (B, K+1, D, H, W, compress)
    heatmap = heatmap_representation(kp_source, kp_driving, spatial, self.kp_variance)
    heatmap = heatmap.astype(deformed.dtype)  # (B, D, H, W, K+1)

    # Per slot k: heatmap channel then the compressed features: channel index k * (1 + c) + j.
    per_slot = jnp.concatenate(
      [heatmap[..., None], jnp.moveaxis(deformed, 1, -2)], axis=-1
    )  # (B, D, H, W, K+1, 1 + compress)
    hourglass_input = per_slot.reshape(batch, *spatial, -1)
    prediction = Hourglass(
      self.block_expansion, self.num_blocks, self.max_features, self.dtype, name="hourglass"
    )(hourglass_input, train)  # (B, D, H, W, block_expansion + in_channels)

    num_slots = motion.shape[1]
    mask_logits = Conv(num_slots, (7, 7, 7), padding=3, dtype=self.dtype, name="mask")(prediction)
    mask_logits = mask_logits.astype(jnp.float32) * self.mask_logit_scale
    mask = jax.nn.softmax(mask_logits, axis=-1)  # (B, D, H, W, K+1)
    # sum_k mask_k (grid + shift_k) = grid + sum_k mask_k shift_k (the mask sums to 1 over k).
    deformation = make_coordinate_grid(spatial) + jnp.einsum(
      "bdhwk,bkc->bdhwc", mask, shift, precision=jax.lax.Precision.HIGHEST
    )  # (B, D, H, W, 3)
    out = {
      "deformation": deformation,
      "mask": mask,
      "sparse_motion": motion,
      "heatmap": heatmap,
      "deformed_feature": deformed,
    }
    if self.estimate_occlusion_map:
      flat = depth_to_channels(prediction)  # (B, H, W, C * D), index c * D + d
      occlusion = Conv(1, (7, 7), padding=3, dtype=self.dtype, name="occlusion")(flat)
      out["occlusion_map"] = jax.nn.sigmoid(occlusion.astype(jnp.float32))
    return out
