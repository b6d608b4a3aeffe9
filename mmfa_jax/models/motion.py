"""Motion estimate for a (source, driving) pair, for both model variants.

``'mmfa'`` (mmfa_delta.md 1-5): canonical keypoints from ``KPDetector``; rotation from the frozen
``Hopenet`` (exact pi, gradients stopped; ``pose_network='learned'`` trains a Hopenet-shaped network
from scratch at the input resolution instead, for experiments without pretrained weights); scale and translation from ``ScaleTranslationHead``;
expression latent from ``ExpressionEncoder``; deformation from ``ExpressionDecoder`` conditioned on
the **source's** canonical keypoints for both frames;
``kp = s * R (canonical + deformation) + t``.

``'face_vid2vid'`` (architecture.md 6): ``HEEstimator`` gives angles (decoded with -99 offset,
rotation with pi = 3.14), translation and the 45-d expression; ``kp = R canonical + t + exp``.

Both frames of a pair use the source's canonical keypoints. ``source_motion`` and
``driving_motion`` are exposed separately so that one source can be reused for many driving frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.he_estimator import HEEstimator
from mmfa_jax.models.hopenet import Hopenet, prepare_hopenet_input
from mmfa_jax.models.keypoint_detector import KPDetector
from mmfa_jax.models.motion_heads import ExpressionDecoder, ExpressionEncoder, ScaleTranslationHead
from mmfa_jax.ops.keypoints import face_vid2vid_keypoints, mmfa_keypoints
from mmfa_jax.ops.rotation import bins_to_degrees, reference_rotation_matrix, rotation_matrix

Dtype = Any
Variant = Literal["mmfa", "face_vid2vid"]


class MotionEstimator(nn.Module):
  """Decomposed motion of source and driving frames.

  Attributes:
    variant: ``'mmfa'`` or ``'face_vid2vid'``.
    kp_detector, he_estimator, hopenet, scale_translation, expression_encoder,
      expression_decoder: keyword arguments of the sub-networks (those of the other variant are
      ignored).
    deformation_frame: MMFA's composition, see ``ops.keypoints.mmfa_keypoints``.
    dtype: computation dtype of every sub-network.
  """

  variant: Variant = "mmfa"
  kp_detector: dict[str, Any] | None = None
  he_estimator: dict[str, Any] | None = None
  hopenet: dict[str, Any] | None = None
  scale_translation: dict[str, Any] | None = None
  expression_encoder: dict[str, Any] | None = None
  expression_decoder: dict[str, Any] | None = None
  deformation_frame: str = "canonical"
  pose_network: str = "hopenet"  # or "learned"
  dtype: Dtype | None = None

  def setup(self) -> None:
    if self.pose_network not in ("hopenet", "learned"):
      raise ValueError(f"pose_network must be 'hopenet' or 'learned', got {self.pose_network!r}")
    if self.variant not in ("mmfa", "face_vid2vid"):
      raise ValueError(f"variant must be 'mmfa' or 'face_vid2vid', got {self.variant!r}")
    self.kp = KPDetector(**(self.kp_detector or {}), dtype=self.dtype)
    if self.variant == "mmfa":
      self.pose = Hopenet(
        **(self.hopenet or {}), trainable=self.pose_network == "learned", dtype=self.dtype
      )
      self.scale_translation_head = ScaleTranslationHead(
        **(self.scale_translation or {}), dtype=self.dtype
      )
      self.exp_encoder = ExpressionEncoder(**(self.expression_encoder or {}), dtype=self.dtype)
      self.exp_decoder = ExpressionDecoder(**(self.expression_decoder or {}), dtype=self.dtype)
    else:
      self.he = HEEstimator(**(self.he_estimator or {}), dtype=self.dtype)

  def canonical_keypoints(self, image: jax.Array, train: bool = False) -> jax.Array:
    """``(B, H, W, 3)`` -> canonical keypoints ``(B, K, 3)``."""
    return self.kp(image, train)["value"]

  def frame_motion(
    self, image: jax.Array, canonical_kp: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Pose, expression and keypoints of one frame on the given canonical keypoints.

    Returns ``yaw``, ``pitch``, ``roll`` (degrees, ``(B,)``), ``rotation`` ``(B, 3, 3)``,
    ``translation`` ``(B, 3)``, ``scale`` ``(B,)`` (1 for face_vid2vid),
    ``expression_deformation`` ``(B, K, 3)``, ``kp`` ``(B, K, 3)``; MMFA adds
    ``expression_latent`` ``(B, d)``.
    """
    if self.variant == "mmfa":
      if self.pose_network == "hopenet":
        logits = self.pose(prepare_hopenet_input(image))
        angles = {k: jax.lax.stop_gradient(bins_to_degrees(v)) for k, v in logits.items()}
      else:
        logits = self.pose(prepare_hopenet_input(image, size=None), train)
        angles = {k: bins_to_degrees(v) for k, v in logits.items()}
      rotation = rotation_matrix(angles["yaw"], angles["pitch"], angles["roll"])
      head = self.scale_translation_head(image, train)
      latent = self.exp_encoder(image, train)
      deformation = self.exp_decoder(latent, canonical_kp, train)
      kp = mmfa_keypoints(
        canonical_kp,
        rotation,
        head["translation"],
        head["scale"],
        deformation,
        deformation_frame=self.deformation_frame,
      )
      return dict(
        angles,
        rotation=rotation,
        translation=head["translation"],
        scale=head["scale"],
        expression_latent=latent,
        expression_deformation=deformation,
        kp=kp,
      )
    he = self.he(image, train)
    angles = {k: bins_to_degrees(he[k]) for k in ("yaw", "pitch", "roll")}
    rotation = reference_rotation_matrix(angles["yaw"], angles["pitch"], angles["roll"])
    deformation = he["exp"].reshape(canonical_kp.shape)
    kp = face_vid2vid_keypoints(canonical_kp, rotation, he["t"], deformation)
    return dict(
      angles,
      rotation=rotation,
      translation=he["t"],
      scale=jnp.ones(image.shape[:1], jnp.float32),
      expression_deformation=deformation,
      kp=kp,
    )

  def source_motion(self, source: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Canonical keypoints of the source and its frame motion (``canonical_kp`` added)."""
    canonical_kp = self.canonical_keypoints(source, train)
    return dict(self.frame_motion(source, canonical_kp, train), canonical_kp=canonical_kp)

  def driving_motion(
    self, driving: jax.Array, source_canonical_kp: jax.Array, train: bool = False
  ) -> dict[str, jax.Array]:
    """Frame motion of driving frames on the source's canonical keypoints."""
    return self.frame_motion(driving, source_canonical_kp, train)

  def __call__(
    self, source: jax.Array, driving: jax.Array, train: bool = False
  ) -> dict[str, dict[str, jax.Array]]:
    """``{'source': ..., 'driving': ...}`` motion dicts; ``kp`` of each feeds the dense motion."""
    source_motion = self.source_motion(source, train)
    driving_motion = self.driving_motion(driving, source_motion["canonical_kp"], train)
    return {"source": source_motion, "driving": driving_motion}


def motion_estimator_kwargs(model_config: Any) -> dict[str, Any]:
  """``MotionEstimator`` keyword arguments (all but variant and dtype) from a config's ``model``."""

  def section(name: str) -> dict[str, Any]:
    value = model_config.get(name)
    if value is None:
      return {}
    return {
      k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
      for k, v in dict(value).items()
    }

  num_kp = model_config.num_kp
  return dict(
    kp_detector=dict(section("kp_detector"), num_kp=num_kp),
    he_estimator=dict(section("he_estimator"), num_kp=num_kp),
    hopenet=section("hopenet"),
    scale_translation=section("scale_translation"),
    expression_encoder=section("expression_encoder"),
    expression_decoder=section("expression_decoder"),
    deformation_frame=model_config.get("deformation_frame", "canonical"),
    pose_network=model_config.get("pose_network", "hopenet"),
  )


def motion_estimator_from_config(model_config: Any, dtype: Dtype | None = None) -> MotionEstimator:
  """Builds ``MotionEstimator`` from a config's ``model`` section (see ``configs/vox.py``)."""
  return MotionEstimator(
    variant=model_config.get("variant", "mmfa"),
    **motion_estimator_kwargs(model_config),
    dtype=dtype,
  )
