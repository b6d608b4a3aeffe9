"""A frozen 2D landmark detector for MMFA's landmark loss (mmfa_delta 10, eq. 9).

MMFA compares a pretrained detector's landmarks on the generated frame and on the driving frame.
``LandmarkDetector`` is a small heatmap detector (a 2D U-Net, one heatmap per landmark, soft
argmax), differentiable end to end, so the loss reaches the generator and the keypoints through
it. It is pretrained on the synthetic heads' true face points (``mmfa_jax/landmark_train.py``)
and plugged into the objective by ``FrozenLandmarks`` (the ``objective.LandmarkNetwork``
interface); a converted FAN-style detector for real faces would plug in the same way.

Coordinates: (x, y), x right and y down, in [-1, 1] image units, pixel i's centre at
``(2 i + 1) / size - 1`` (the synthetic renderer's convention, ``data.synthetic.face_points``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.models.blocks import DownBlock, UpBlock, hourglass_channels
from mmfa_jax.ops.grid_sample import pixel_centre_axis
from mmfa_jax.ops.keypoints import soft_argmax
from mmfa_jax.ops.layers import Conv
from mmfa_jax.ops.pyramid import antialias_downsample

Dtype = Any


class LandmarkDetector(nn.Module):
  """Image ``(B, H, W, 3)`` in [0, 1] -> landmarks ``(B, L, 2)``, (x, y) in [-1, 1] (module doc).

  The image is downscaled to ``input_size`` (anti-aliased, ``H`` a multiple of it), then
  ``down_blocks`` DownBlock2d halve it, ``up_blocks`` UpBlock2d double it back with the matching
  encoder output concatenated (U-Net), and a Conv k3 gives one logit map per landmark at
  ``input_size / 2 ** (down_blocks - up_blocks)``; softmax over each map, landmark = its
  expected pixel centre. Returns ``{'value': (B, L, 2), 'heatmap': (B, h, w, L)}``.
  """

  num_points: int = 10
  input_size: int = 64
  block_expansion: int = 16
  max_features: int = 128
  down_blocks: int = 3
  up_blocks: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    if image.shape[1] % self.input_size or image.shape[1] != image.shape[2]:
      raise ValueError(
        f"LandmarkDetector takes square images whose side is a multiple of input_size "
        f"{self.input_size}, got {image.shape[1:3]}"
      )
    x = antialias_downsample(image, self.input_size / image.shape[1])  # (B, S, S, 3)
    skips = [x]
    for i in range(self.down_blocks):
      features = hourglass_channels(self.block_expansion, self.max_features, i + 1)
      x = DownBlock(features, ndim=2, dtype=self.dtype, name=f"down_blocks_{i}")(x, train)
      skips.append(x)
    skips.pop()
    for j in range(self.up_blocks):
      level = self.down_blocks - 1 - j
      features = hourglass_channels(self.block_expansion, self.max_features, level)
      x = UpBlock(features, ndim=2, dtype=self.dtype, name=f"up_blocks_{j}")(x, train)
      x = jnp.concatenate([x, skips.pop()], axis=-1)
    logits = Conv(self.num_points, (3, 3), padding=1, dtype=self.dtype, name="heatmap")(x)
    logits = logits.astype(jnp.float32)  # (B, h, w, L)
    h, w = logits.shape[1:3]
    grid = jnp.stack(jnp.meshgrid(pixel_centre_axis(w), pixel_centre_axis(h)), -1)  # (h, w, 2)
    value, heatmap = soft_argmax(logits, grid)  # (B, L, 2), (B, h, w, L)
    return {"value": value, "heatmap": heatmap}


# The LandmarkDetector fields a saved detector records (its number of points is len(point_weights)).
DETECTOR_SETTINGS = ("input_size", "block_expansion", "max_features", "down_blocks", "up_blocks")


class FrozenLandmarks:
  """A pretrained ``LandmarkDetector`` as the objective's frozen landmark network
  (``objective.LandmarkNetwork``): ``apply(variables, images)`` -> ``(B, L, 2)`` in eval mode,
  ``point_weights`` ``(L,)`` the per-part factors of the landmark loss."""

  def __init__(self, point_weights: Sequence[float], dtype: Dtype | None = None, **settings: Any):
    self.detector = LandmarkDetector(num_points=len(point_weights), dtype=dtype, **settings)
    self.point_weights = np.asarray(point_weights, np.float32)

  def apply(self, variables: Any, images: jax.Array) -> jax.Array:
    return self.detector.apply(variables, images)["value"]

  def metadata(self) -> dict[str, Any]:
    """What a saved detector's ``metadata.json`` records to rebuild it (``from_metadata``)."""
    settings = {f: getattr(self.detector, f) for f in DETECTOR_SETTINGS}
    return {"point_weights": self.point_weights.tolist(), "detector": settings}

  @classmethod
  def from_metadata(cls, metadata: dict[str, Any], where: str = "") -> FrozenLandmarks:
    """The detector a converted ``landmarks`` directory describes (its ``metadata.json``)."""
    if "point_weights" not in metadata or "detector" not in metadata:
      from mmfa_jax.checkpoints import ConvertedWeightsError

      raise ConvertedWeightsError(f"{where}: metadata.json does not describe its landmark detector "
                       "(point_weights, detector settings)")  # fmt: skip
    settings = {k: v for k, v in metadata["detector"].items() if k in DETECTOR_SETTINGS}
    return cls(metadata["point_weights"], **settings)


def landmarks_from_config(model_config: Any, dtype: Dtype | None = None) -> FrozenLandmarks:
  """``FrozenLandmarks`` from ``config.model.landmarks``: ``point_weights`` (one per landmark)
  and the ``LandmarkDetector`` settings."""
  settings = dict(model_config.landmarks)
  return FrozenLandmarks(tuple(settings.pop("point_weights")), dtype=dtype, **settings)
