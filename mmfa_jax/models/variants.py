"""The model variants, decided once: ``variant_from_config(model_config)`` gives the object that
knows everything a variant changes. Nothing else in the library compares variant names or reads
their defaults.

- ``MMFA`` (mmfa_delta.md): ``kp = s R (x_c + delta) + t`` (``deformation_frame='posed'``:
  ``s (R x_c + delta) + t``), rotations with the exact pi, the frozen pretrained Hopenet as an input
  of the motion estimator (``pose_network='hopenet'``) or a pose network learned from scratch
  (``'learned'``), an expression latent (the representation loss, the expression VAE), canonical
  keypoints of the warped frame of its own (equivariance) and of the driving frame (identity loss).
- ``FaceVid2Vid`` (architecture.md 6): ``kp = R x_c + t + delta``, the reference's pi = 3.14, the
  head-pose loss against a frozen Hopenet, the reference demo's convex-hull movement scale.

What a driving frame contributes at inference (``driving_keypoints``) is described in
``mmfa_jax.inference``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.models.hopenet import Hopenet, hopenet_head_pose
from mmfa_jax.models.motion import (
  FaceVid2VidMotionEstimator,
  HeadPose,
  MMFAMotionEstimator,
  config_section,
  motion_sections,
)
from mmfa_jax.ops.keypoints import mmfa_keypoints, relative_keypoints, relative_pose
from mmfa_jax.ops.rotation import (
  reference_rotation_matrix,
  rotation_matrix,
  rotation_matrix_to_euler,
)

Mode = Literal["relative", "absolute"]
ANGLES = ("yaw", "pitch", "roll")
DEFAULT_VARIANT = "mmfa"


class Variant(abc.ABC):
  """One model variant; instances are frozen dataclasses (hashable, usable as static arguments).

  Subclasses set ``name``, ``motion_estimator_class`` and ``untrained_terms`` (loss terms the
  variant has no outputs for) and implement the keypoint and rotation conventions.
  """

  name: ClassVar[str]
  motion_estimator_class: ClassVar[type[nn.Module]]
  untrained_terms: ClassVar[frozenset[str]]
  deformation_frame: str  # keypoint composition, see ops.keypoints.mmfa_keypoints
  has_expression_latent: ClassVar[bool]  # MMFA's latent: representation loss, expression VAE
  own_transformed_canonical: ClassVar[bool]  # the warped frame gets its own canonical keypoints

  @classmethod
  @abc.abstractmethod
  def from_config(cls, model_config: Any) -> Variant: ...

  # -- networks
  def motion_estimator(self, sections: Mapping[str, Any], dtype: Any = None) -> nn.Module:
    """The variant's motion estimator from ``models.motion.motion_sections`` (the other
    variant's sections are ignored)."""
    fields = {f.name for f in dataclasses.fields(self.motion_estimator_class)}
    kwargs = {k: v for k, v in sections.items() if k in fields and k not in ("parent", "name")}
    return self.motion_estimator_class(**kwargs, **self._estimator_options(), dtype=dtype)

  def _estimator_options(self) -> dict[str, Any]:
    return {}

  @property
  def frozen_pose(self) -> bool:
    """Whether the motion estimator takes its head pose from the frozen pretrained Hopenet."""
    return False

  def head_pose(
    self, frozen: Mapping[str, Any], images: jax.Array, dtype: Any = None
  ) -> HeadPose | None:
    """The motion estimator's ``head_pose`` input for ``(B, H, W, 3)`` frames (``None`` where the
    variant has none); ``frozen['hopenet']`` are the frozen network's variables."""
    return None

  def frozen_networks(self, loss_config: Any) -> tuple[str, ...]:
    """Frozen pretrained networks (``config.pretrained`` kinds) the model and its losses need."""
    return ()

  def trains_term(self, name: str) -> bool:
    """Whether generator loss term ``name`` applies to this variant."""
    return name not in self.untrained_terms

  def convex_hull_scale(self, mode: Mode, adapt_scale: bool) -> bool:
    """Whether ``adapt_scale`` is the reference demo's convex-hull ratio (computed on the host,
    needs 4 or more keypoints)."""
    return False

  # -- keypoint and rotation conventions (pure array functions; traceable)
  @abc.abstractmethod
  def rotation(self, yaw: Any, pitch: Any, roll: Any) -> jax.Array:
    """Rotation matrices ``(B, 3, 3)`` of angles in degrees."""

  def keypoints(
    self,
    canonical_kp: jax.Array,
    rotation: jax.Array,
    translation: jax.Array,
    scale: jax.Array,
    expression_deformation: jax.Array,
  ) -> jax.Array:
    """Keypoints ``(B, K, 3)`` of a pose and expression on canonical keypoints (batch 1 or B):
    ``ops.keypoints.mmfa_keypoints`` in the variant's ``deformation_frame`` (face-vid2vid:
    ``'posed'``, ``s (R x_c + delta) + t``, the reference's ``R x_c + t + delta`` at ``s = 1``)."""
    batch = rotation.shape[0]
    canonical_kp = jnp.broadcast_to(canonical_kp, (batch, *canonical_kp.shape[1:]))
    return mmfa_keypoints(
      canonical_kp,
      rotation,
      translation,
      scale,
      expression_deformation,
      deformation_frame=self.deformation_frame,
    )

  @abc.abstractmethod
  def driving_keypoints(
    self,
    source: Any,
    driving: Any,
    initial: Any,
    *,
    mode: Mode,
    adapt_scale: bool,
    movement_scale: Any,
    given: Mapping[str, Any],
    canonical_kp: jax.Array,
  ) -> jax.Array:
    """Target keypoints ``(B, K, 3)`` of driving motions (``inference.Motion``) on the source's
    (module docstring of ``mmfa_jax.inference``); ``given`` angles (degrees) replace the
    resulting ones; ``movement_scale`` is the host-computed convex-hull ratio where
    ``convex_hull_scale``."""


def _given_rotation(variant: Variant, angles: dict[str, Any], given: Mapping[str, Any]) -> Any:
  batch = angles["yaw"].shape[0]
  angles = dict(angles, **{k: jnp.full((batch,), v, jnp.float32) for k, v in given.items()})
  return variant.rotation(angles["yaw"], angles["pitch"], angles["roll"])


@dataclasses.dataclass(frozen=True)
class MMFA(Variant):
  """MMFA; ``hopenet``: the Hopenet's keyword arguments as ``(name, value)`` pairs."""

  deformation_frame: str = "canonical"
  pose_network: str = "hopenet"
  hopenet: tuple[tuple[str, Any], ...] = ()

  name: ClassVar[str] = "mmfa"
  motion_estimator_class: ClassVar[type[nn.Module]] = MMFAMotionEstimator
  untrained_terms: ClassVar[frozenset[str]] = frozenset({"headpose"})
  has_expression_latent: ClassVar[bool] = True
  own_transformed_canonical: ClassVar[bool] = True

  @classmethod
  def from_config(cls, model_config: Any) -> MMFA:
    return cls(
      deformation_frame=model_config.get("deformation_frame", "canonical"),
      pose_network=model_config.get("pose_network", "hopenet"),
      hopenet=tuple(sorted(config_section(model_config, "hopenet").items())),
    )

  def _estimator_options(self) -> dict[str, Any]:
    return {"deformation_frame": self.deformation_frame, "pose_network": self.pose_network}

  @property
  def frozen_pose(self) -> bool:
    return self.pose_network == "hopenet"

  def head_pose(
    self, frozen: Mapping[str, Any], images: jax.Array, dtype: Any = None
  ) -> HeadPose | None:
    if not self.frozen_pose:
      return None
    return hopenet_head_pose(Hopenet(**dict(self.hopenet), dtype=dtype), frozen["hopenet"], images)

  def frozen_networks(self, loss_config: Any) -> tuple[str, ...]:
    return ("hopenet",) if self.frozen_pose else ()

  def rotation(self, yaw: Any, pitch: Any, roll: Any) -> jax.Array:
    return rotation_matrix(yaw, pitch, roll)

  def driving_keypoints(
    self, source, driving, initial, *, mode, adapt_scale, movement_scale, given, canonical_kp
  ):
    batch = driving.kp.shape[0]
    if mode == "absolute":
      rotation, translation, scale = driving.rotation, driving.translation, driving.scale
    else:
      movement = source.scale / initial.scale if adapt_scale else 1.0
      rotation, translation, scale = relative_pose(
        (source.rotation, source.translation, source.scale),
        (driving.rotation, driving.translation, driving.scale),
        (initial.rotation, initial.translation, initial.scale),
        movement,
      )
    rotation = jnp.broadcast_to(rotation, (batch, 3, 3))
    translation = jnp.broadcast_to(translation, (batch, 3))
    scale = jnp.broadcast_to(scale, (batch,))
    if given:
      rotation = _given_rotation(self, dict(zip(ANGLES, rotation_matrix_to_euler(rotation))), given)
    return self.keypoints(
      canonical_kp, rotation, translation, scale, driving.expression_deformation
    )


@dataclasses.dataclass(frozen=True)
class FaceVid2Vid(Variant):
  """The face-vid2vid reference."""

  name: ClassVar[str] = "face_vid2vid"
  deformation_frame: ClassVar[str] = "posed"  # s (R x_c + delta) + t
  motion_estimator_class: ClassVar[type[nn.Module]] = FaceVid2VidMotionEstimator
  untrained_terms: ClassVar[frozenset[str]] = frozenset({"representation", "identity"})
  has_expression_latent: ClassVar[bool] = False
  own_transformed_canonical: ClassVar[bool] = False

  @classmethod
  def from_config(cls, model_config: Any) -> FaceVid2Vid:
    return cls()

  def frozen_networks(self, loss_config: Any) -> tuple[str, ...]:
    return ("hopenet",) if loss_config.headpose > 0 else ()

  def convex_hull_scale(self, mode: Mode, adapt_scale: bool) -> bool:
    return adapt_scale and mode == "relative"

  def rotation(self, yaw: Any, pitch: Any, roll: Any) -> jax.Array:
    return reference_rotation_matrix(yaw, pitch, roll)

  def driving_keypoints(
    self, source, driving, initial, *, mode, adapt_scale, movement_scale, given, canonical_kp
  ):
    kp_driving = driving.kp
    if given:
      angles = {k: getattr(driving, k) for k in ANGLES}
      kp_driving = self.keypoints(
        canonical_kp,
        _given_rotation(self, angles, given),
        driving.translation,
        driving.scale,
        driving.expression_deformation,
      )
    if mode == "absolute":
      return kp_driving
    return relative_keypoints(source.kp, kp_driving, initial.kp, movement_scale)


VARIANTS: dict[str, type[Variant]] = {v.name: v for v in (MMFA, FaceVid2Vid)}


def variant_from_config(model_config: Any) -> Variant:
  """The variant of a config's ``model`` section (``variant``, default ``'mmfa'``)."""
  name = model_config.get("variant", DEFAULT_VARIANT)
  if name not in VARIANTS:
    raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {name!r}")
  return VARIANTS[name].from_config(model_config)


def as_variant(variant: str | Variant, **options: Any) -> Variant:
  """A ``Variant`` from an instance or a name (``options``: the name's config keys)."""
  if isinstance(variant, Variant):
    return variant
  return variant_from_config({"variant": variant, **options})


def require_variant(model_config: Any, wanted: str | None) -> Variant:
  """The config's variant; ``ValueError`` when ``wanted`` (a name) is given and differs."""
  variant = variant_from_config(model_config)
  if wanted is not None and variant.name != wanted:
    raise ValueError(f"a {variant.name} checkpoint, but a {wanted} one is needed here")
  return variant


def motion_estimator_from_config(model_config: Any, dtype: Any = None) -> nn.Module:
  """The motion estimator of a config's ``model`` section (see ``configs/vox.py``)."""
  return variant_from_config(model_config).motion_estimator(motion_sections(model_config), dtype)
