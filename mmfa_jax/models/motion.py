"""Motion estimate for a (source, driving) pair: one Flax module per model variant.

``MMFAMotionEstimator`` (mmfa_delta.md 1-5): canonical keypoints from ``KPDetector``; rotation
from the head pose of the frozen, pretrained Hopenet, which is an **input** (``head_pose``,
computed outside the trained model by ``models.hopenet.hopenet_head_pose``; its variables are
never part of the trained ``params``), or, with ``pose_network='learned'``, from a Hopenet-shaped
network trained from scratch at the input resolution (experiments without pretrained weights);
scale and translation from ``ScaleTranslationHead``; expression latent from
``ExpressionEncoder``; deformation from ``ExpressionDecoder`` conditioned on the **source's**
canonical keypoints for both frames; ``kp = s * R (canonical + deformation) + t``.

``FaceVid2VidMotionEstimator`` (architecture.md 6): ``HEEstimator`` gives angles (decoded with
-99 offset, rotation with pi = 3.14), translation and the 45-d expression;
``kp = R canonical + t + exp``.

Both frames of a pair use the source's canonical keypoints. ``source_motion`` and
``driving_motion`` are exposed separately so that one source can be reused for many driving frames.
Which class a config builds is decided in ``models.variants``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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
HeadPose = dict[str, jax.Array]  # {'yaw', 'pitch', 'roll'}: (B,) degrees
POSE_NETWORKS = ("hopenet", "learned")


def zero_head_pose(batch: int) -> HeadPose:
  """A level head pose of ``batch`` frames (initialising a model only needs the shapes)."""
  return {k: jnp.zeros((batch,), jnp.float32) for k in ("yaw", "pitch", "roll")}


class _MotionEstimator(nn.Module):
  """What both variants share: canonical keypoints and the source / driving split.

  Subclasses define ``frame_motion(image, canonical_kp, train, head_pose)``.
  """

  kp_detector: dict[str, Any] | None = None
  dtype: Dtype | None = None

  def canonical_keypoints(self, image: jax.Array, train: bool = False) -> jax.Array:
    """``(B, H, W, 3)`` -> canonical keypoints ``(B, K, 3)``."""
    return self.kp(image, train)["value"]

  def source_motion(
    self, source: jax.Array, train: bool = False, head_pose: HeadPose | None = None
  ) -> dict[str, jax.Array]:
    """Canonical keypoints of the source and its frame motion (``canonical_kp`` added)."""
    canonical_kp = self.canonical_keypoints(source, train)
    motion = self.frame_motion(source, canonical_kp, train, head_pose)
    return dict(motion, canonical_kp=canonical_kp)

  def driving_motion(
    self,
    driving: jax.Array,
    source_canonical_kp: jax.Array,
    train: bool = False,
    head_pose: HeadPose | None = None,
  ) -> dict[str, jax.Array]:
    """Frame motion of driving frames on the source's canonical keypoints."""
    return self.frame_motion(driving, source_canonical_kp, train, head_pose)

  def __call__(
    self,
    source: jax.Array,
    driving: jax.Array,
    train: bool = False,
    head_poses: tuple[HeadPose, HeadPose] | None = None,
  ) -> dict[str, dict[str, jax.Array]]:
    """``{'source': ..., 'driving': ...}`` motion dicts; ``kp`` of each feeds the dense motion.
    ``head_poses``: (source, driving) head poses of the frozen pose network, where one is used."""
    source_pose, driving_pose = head_poses or (None, None)
    source_motion = self.source_motion(source, train, source_pose)
    driving_motion = self.driving_motion(
      driving, source_motion["canonical_kp"], train, driving_pose
    )
    return {"source": source_motion, "driving": driving_motion}


class MMFAMotionEstimator(_MotionEstimator):
  """MMFA's decomposed motion (module docstring).

  Attributes:
    kp_detector, hopenet, scale_translation, expression_encoder, expression_decoder: keyword
      arguments of the sub-networks (``hopenet`` only for ``pose_network='learned'``).
    deformation_frame: the composition, see ``ops.keypoints.mmfa_keypoints``.
    pose_network: ``'hopenet'`` (the frozen pretrained network's ``head_pose`` is an input) or
      ``'learned'``.
    dtype: computation dtype of every sub-network.
  """

  hopenet: dict[str, Any] | None = None
  scale_translation: dict[str, Any] | None = None
  expression_encoder: dict[str, Any] | None = None
  expression_decoder: dict[str, Any] | None = None
  deformation_frame: str = "canonical"
  pose_network: str = "hopenet"

  def setup(self) -> None:
    if self.pose_network not in POSE_NETWORKS:
      raise ValueError(f"pose_network must be 'hopenet' or 'learned', got {self.pose_network!r}")
    self.kp = KPDetector(**(self.kp_detector or {}), dtype=self.dtype)
    if self.pose_network == "learned":
      self.pose = Hopenet(**(self.hopenet or {}), trainable=True, dtype=self.dtype)
    self.scale_translation_head = ScaleTranslationHead(
      **(self.scale_translation or {}), dtype=self.dtype
    )
    self.exp_encoder = ExpressionEncoder(**(self.expression_encoder or {}), dtype=self.dtype)
    self.exp_decoder = ExpressionDecoder(**(self.expression_decoder or {}), dtype=self.dtype)

  def frame_motion(
    self,
    image: jax.Array,
    canonical_kp: jax.Array,
    train: bool = False,
    head_pose: HeadPose | None = None,
  ) -> dict[str, jax.Array]:
    """Pose, expression and keypoints of one frame on the given canonical keypoints.

    Returns ``yaw``, ``pitch``, ``roll`` (degrees, ``(B,)``), ``rotation`` ``(B, 3, 3)``,
    ``translation`` ``(B, 3)``, ``scale`` ``(B,)``, ``expression_latent`` ``(B, d)``,
    ``expression_deformation`` ``(B, K, 3)``, ``kp`` ``(B, K, 3)``.
    """
    if self.pose_network == "learned":
      logits = self.pose(prepare_hopenet_input(image, size=None), train)
      angles = {k: bins_to_degrees(v) for k, v in logits.items()}
    elif head_pose is None:
      raise ValueError(
        "this MMFA motion estimator takes its rotation from the frozen pretrained Hopenet: pass "
        "head_pose (models.hopenet.hopenet_head_pose of the same frames)"
      )
    else:
      angles = {k: jax.lax.stop_gradient(head_pose[k]) for k in ("yaw", "pitch", "roll")}
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


class FaceVid2VidMotionEstimator(_MotionEstimator):
  """The reference's motion (module docstring); ``he_estimator``: ``HEEstimator`` arguments."""

  he_estimator: dict[str, Any] | None = None

  def setup(self) -> None:
    self.kp = KPDetector(**(self.kp_detector or {}), dtype=self.dtype)
    self.he = HEEstimator(**(self.he_estimator or {}), dtype=self.dtype)

  def frame_motion(
    self,
    image: jax.Array,
    canonical_kp: jax.Array,
    train: bool = False,
    head_pose: HeadPose | None = None,
  ) -> dict[str, jax.Array]:
    """As ``MMFAMotionEstimator.frame_motion`` with ``scale`` 1 and no ``expression_latent``;
    ``head_pose`` is not used (the reference predicts its own angles)."""
    del head_pose
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


def config_section(model_config: Any, name: str) -> dict[str, Any]:
  """One sub-network's keyword arguments from a config's ``model`` (lists as tuples)."""
  value = model_config.get(name)
  if value is None:
    return {}
  return {
    k: tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v
    for k, v in dict(value).items()
  }


def motion_sections(model_config: Any) -> dict[str, Any]:
  """The sub-network keyword arguments of a config's ``model`` (both variants' sections)."""

  def section(name: str) -> dict[str, Any]:
    return config_section(model_config, name)

  num_kp = model_config.num_kp
  return dict(
    kp_detector=dict(section("kp_detector"), num_kp=num_kp),
    he_estimator=dict(section("he_estimator"), num_kp=num_kp),
    hopenet=section("hopenet"),
    scale_translation=section("scale_translation"),
    expression_encoder=section("expression_encoder"),
    expression_decoder=section("expression_decoder"),
  )
