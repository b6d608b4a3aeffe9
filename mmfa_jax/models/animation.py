"""The whole animation model: motion estimation + appearance volume + dense motion + generator.

``encode_source`` computes what depends on the source only (its canonical keypoints, its pose and
expression, its appearance volume); ``animate`` turns that state and a batch of driving frames into
images. A source state of batch 1 is broadcast to any number of driving frames, so a video is
animated from one source encoding. ``__call__(source, driving)`` does both for a batch of pairs.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.generator import MultiScaleGenerator, OcclusionAwareGenerator, SPADEGenerator
from mmfa_jax.models.motion import HeadPose, motion_sections
from mmfa_jax.models.variants import Variant, as_variant, variant_from_config

Dtype = Any
GeneratorKind = Literal["multiscale", "spade", "original"]

GENERATORS = {
  "multiscale": MultiScaleGenerator,
  "spade": SPADEGenerator,
  "original": OcclusionAwareGenerator,
}


def _broadcast_batch(tree: Any, batch: int) -> Any:
  def expand(x: jax.Array) -> jax.Array:
    if x.shape[0] == batch:
      return x
    if x.shape[0] != 1:
      raise ValueError(f"source batch {x.shape[0]} cannot drive a batch of {batch} frames")
    return jnp.broadcast_to(x, (batch, *x.shape[1:]))

  return jax.tree.map(expand, tree)


class AnimationModel(nn.Module):
  """Source image + driving frames -> generated frames and every intermediate.

  Attributes:
    variant: a ``models.variants.Variant`` or its name (``'mmfa'``, ``'face_vid2vid'``); it
      builds the motion estimator (``models.motion``).
    generator_kind: ``'multiscale'`` (MMFA), ``'spade'`` (released face-vid2vid) or ``'original'``.
    motion: sub-network keyword arguments (``models.motion.motion_sections``).

  ``head_pose`` arguments: the frozen pose network's ``{'yaw', 'pitch', 'roll'}`` (degrees, ``(B,)``)
  of the same frames, for an MMFA model with the pretrained Hopenet (``Variant.head_pose``);
  ignored otherwise.
    generator: keyword arguments of the generator (its ``dense_motion`` included).
    dtype: computation dtype.
  """

  variant: str | Variant = "mmfa"
  generator_kind: GeneratorKind = "multiscale"
  motion: dict[str, Any] | None = None
  generator: dict[str, Any] | None = None
  dtype: Dtype | None = None

  def setup(self) -> None:
    if self.generator_kind not in GENERATORS:
      raise ValueError(
        f"generator_kind must be one of {sorted(GENERATORS)}, got {self.generator_kind!r}"
      )
    self.motion_estimator = as_variant(self.variant).motion_estimator(self.motion or {}, self.dtype)
    self.image_generator = GENERATORS[self.generator_kind](
      **(self.generator or {}), dtype=self.dtype
    )

  def encode_source(
    self, source: jax.Array, train: bool = False, head_pose: HeadPose | None = None
  ) -> dict[str, Any]:
    """``(B, H, W, 3)`` -> ``{'motion': source motion dict, 'feature_3d': (B, D, h, w, C)}``."""
    return {
      "motion": self.motion_estimator.source_motion(source, train, head_pose),
      "feature_3d": self.image_generator.encode(source, train),
    }

  def animate(
    self,
    source_state: dict[str, Any],
    driving: jax.Array,
    train: bool = False,
    kp_driving: jax.Array | None = None,
    head_pose: HeadPose | None = None,
  ) -> dict[str, Any]:
    """Generates one frame per driving frame.

    Args:
      source_state: from ``encode_source`` (batch B or 1).
      driving: ``(B, H, W, 3)`` driving frames.
      train: BatchNorm / spectral-norm mode.
      kp_driving: optional ``(B, K, 3)`` keypoints replacing the driving motion's (editing,
        relative motion); the driving motion is still returned.
      head_pose: of the driving frames (class docstring).

    Returns:
      generator outputs (``prediction`` ``(B, H, W, 3)``, ``predictions`` for the multi-scale
      generator, ``mask``, ``deformation``, ``occlusion_map`` ...), plus ``kp_source``,
      ``kp_driving``, ``source_motion`` and ``driving_motion``.
    """
    state = _broadcast_batch(source_state, driving.shape[0])
    source_motion = state["motion"]
    driving_motion = self.motion_estimator.driving_motion(
      driving, source_motion["canonical_kp"], train, head_pose
    )
    kp_target = driving_motion["kp"] if kp_driving is None else kp_driving
    outputs = self.image_generator.decode(
      state["feature_3d"], source_motion["kp"], kp_target, train
    )
    return dict(
      outputs,
      kp_source=source_motion["kp"],
      kp_driving=kp_target,
      source_motion=source_motion,
      driving_motion=driving_motion,
    )

  def frame_motion(
    self, frames: jax.Array, canonical_kp: jax.Array, head_pose: HeadPose | None = None
  ) -> dict[str, jax.Array]:
    """Eval-mode motion of ``(B, H, W, 3)`` frames on (source) canonical keypoints ``(B or 1, K, 3)``
    (see ``MMFAMotionEstimator.frame_motion``)."""
    canonical_kp = jnp.broadcast_to(canonical_kp, (frames.shape[0], *canonical_kp.shape[1:]))
    return self.motion_estimator.driving_motion(frames, canonical_kp, False, head_pose)

  def render(self, source_state: dict[str, Any], kp_driving: jax.Array) -> dict[str, Any]:
    """Eval-mode generator outputs for target keypoints ``(B, K, 3)`` (editing, relative motion):
    the source's appearance volume moved from its keypoints to ``kp_driving``."""
    state = _broadcast_batch(source_state, kp_driving.shape[0])
    return self.image_generator.decode(
      state["feature_3d"], state["motion"]["kp"], kp_driving, False
    )

  def expression_deformation(self, latent: jax.Array, canonical_kp: jax.Array) -> jax.Array:
    """MMFA's expression decoder (eval mode): latents ``(B, d)`` on canonical keypoints
    ``(B or 1, K, 3)`` -> deformations ``(B, K, 3)``."""
    canonical_kp = jnp.broadcast_to(canonical_kp, (latent.shape[0], *canonical_kp.shape[1:]))
    return self.motion_estimator.exp_decoder(latent, canonical_kp, False)

  def __call__(
    self,
    source: jax.Array,
    driving: jax.Array,
    train: bool = False,
    head_poses: tuple[HeadPose, HeadPose] | None = None,
  ) -> dict[str, Any]:
    """``animate(encode_source(source), driving)``; ``head_poses``: (source, driving)."""
    source_pose, driving_pose = head_poses or (None, None)
    state = self.encode_source(source, train, source_pose)
    return self.animate(state, driving, train, head_pose=driving_pose)


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}  # compute dtypes by their config names


def animation_model_from_config(model_config: Any, dtype: Dtype | None = None) -> AnimationModel:
  """Builds ``AnimationModel`` from a config's ``model`` section (see ``configs/vox.py``)."""
  generator = dict(model_config.generator)
  kind = generator.pop("kind", "multiscale")
  generator["dense_motion"] = dict(model_config.dense_motion)
  if kind == "spade":
    generator.setdefault("first_kernel_size", 3)
  return AnimationModel(
    variant=variant_from_config(model_config),
    generator_kind=kind,
    motion=motion_sections(model_config),
    generator=generator,
    dtype=dtype,
  )
