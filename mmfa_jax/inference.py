"""Animation and editing with a trained or converted model: the Python API behind the commands.

    from mmfa_jax.inference import Animator

    animator = Animator.from_checkpoint("pretrained/fv2v")  # or a training run's workdir
    frames = animator.animate(source, driving, mode="relative")  # (T, H, W, 3) in [0, 1]
    turned = animator.edit(source, yaw=20.0)  # (H, W, 3)
    video = animator.sweep(source, "yaw", np.linspace(-30, 30, 31))

Images are RGB float arrays in [0, 1], ``(H, W, 3)``; videos ``(T, H, W, 3)`` or any iterable of
frames (``iter_animate`` streams them: frames in, frames out, memory bounded by the batch size).
Inputs of another size are resized to the model's (anti-aliased), as the reference demo does.
Angles are in degrees; translations are (x, y, z) in the normalised [-1, 1] keypoint space.

What a driving frame contributes (``mode``):

- face_vid2vid (the reference's demo.py, architecture.md 6.4): ``'absolute'`` uses the driving
  keypoints ``R_d x_c + t_d + delta_d`` on the source's canonical keypoints; ``'relative'`` uses
  ``kp_s + (kp_d - kp_d0) * m`` with ``kp_d0`` from the first driving frame and ``m`` from
  ``adapt_scale`` (convex-hull volumes, as the reference) or 1. ``yaw``/``pitch``/``roll`` replace
  the predicted driving angles (free view).
- MMFA (mmfa_delta.md 15): the expression deformation is always the driver's (already on the
  source's canonical keypoints); ``'relative'`` moves the source's pose by the driver's change since
  its first frame (``ops.keypoints.relative_pose``; ``adapt_scale`` scales the translation change
  by ``s_s / s_d0``), ``'absolute'`` takes the driver's pose. ``yaw``/``pitch``/``roll`` set the
  resulting angles.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmfa_jax.data.video import resize, to_rgb_float
from mmfa_jax.model_loading import CheckpointKindError, load_model
from mmfa_jax.models.animation import (
  DTYPES,
  AnimationModel,
  animation_model_from_config,
)
from mmfa_jax.models.expression_vae import ExpressionVAE
from mmfa_jax.ops.keypoints import (
  adapt_movement_scale,
  mmfa_keypoints,
  relative_keypoints,
  relative_pose,
)
from mmfa_jax.ops.rotation import (
  reference_rotation_matrix,
  rotation_matrix,
  rotation_matrix_to_euler,
)

Mode = Literal["relative", "absolute"]
ANGLES = ("yaw", "pitch", "roll")
ATTRIBUTES = ("yaw", "pitch", "roll", "scale", "tx", "ty", "tz")


# --------------------------------------------------------------------------------------------
# Images


def as_image(image: Any, size: int, name: str = "image") -> np.ndarray:
  """An RGB, gray or RGBA image (uint8, uint16 or float in [0, 1]) -> float32 ``(size, size, 3)``.

  Conversion by ``data.video.to_rgb_float``; other sizes are resized (``data.video.resize``,
  anti-aliased bilinear, aspect not kept: crop first to keep it), which is logged.
  """
  array = np.asarray(image)
  if array.ndim not in (2, 3):
    raise ValueError(f"{name}: want an (H, W, 3) RGB image, got shape {array.shape}")
  try:
    array = to_rgb_float(array)
  except ValueError as error:
    raise ValueError(f"{name}: {error} (shape {array.shape})") from error
  if array.shape[:2] != (size, size):
    logging.info(
      "%s: resized from %dx%d to %dx%d", name, array.shape[1], array.shape[0], size, size
    )
    array = resize(array, size)
  return np.clip(array, 0.0, 1.0)


def _chunks(frames: Iterable[Any], size: int) -> Iterator[list[Any]]:
  chunk = []
  for frame in frames:
    chunk.append(frame)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


# --------------------------------------------------------------------------------------------
# Motion


@dataclasses.dataclass(frozen=True)
class Motion:
  """Motion of a batch of frames on a source's canonical keypoints (host or device arrays).

  ``yaw``, ``pitch``, ``roll`` (degrees) and ``scale`` are ``(B,)``; ``rotation`` ``(B, 3, 3)``,
  ``translation`` ``(B, 3)``, ``expression_deformation`` and ``kp`` ``(B, K, 3)``;
  ``expression_latent`` ``(B, d)`` for MMFA (``None`` for face_vid2vid).
  """

  yaw: jax.Array
  pitch: jax.Array
  roll: jax.Array
  rotation: jax.Array
  translation: jax.Array
  scale: jax.Array
  expression_deformation: jax.Array
  kp: jax.Array
  expression_latent: jax.Array | None = None

  @classmethod
  def from_dict(cls, motion: Mapping[str, jax.Array]) -> Motion:
    names = [f.name for f in dataclasses.fields(cls)]
    return cls(**{k: motion[k] for k in names if k in motion})

  def take(self, index: Any) -> Motion:
    """Rows ``index`` of every field."""
    return jax.tree.map(lambda x: x[index], self)


jax.tree_util.register_dataclass(
  Motion,
  data_fields=[f.name for f in dataclasses.fields(Motion)],
  meta_fields=[],
)


# --------------------------------------------------------------------------------------------
# Compiled model functions (pure: variables in, arrays out)


def _float32(tree: Any) -> Any:
  """Floating leaves as float32 (motion and keypoint maths stay float32 whatever the compute)."""
  return jax.tree.map(
    lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def _encode(model: AnimationModel, source: jax.Array) -> dict[str, Any]:
  state = dict(model.encode_source(source, False))
  state["motion"] = _float32(state["motion"])
  return state


def _frame_motion(model: AnimationModel, frames: jax.Array, canonical_kp: jax.Array) -> dict:
  return _float32(model.frame_motion(frames, canonical_kp))


def _render(model: AnimationModel, state: dict[str, Any], kp_driving: jax.Array) -> jax.Array:
  return model.render(state, kp_driving)["prediction"].astype(jnp.float32)


def _expression_deformation(
  model: AnimationModel, latent: jax.Array, canonical_kp: jax.Array
) -> jax.Array:
  return model.expression_deformation(latent, canonical_kp).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class _KeypointRules:
  """How a variant turns motion into keypoints (pure functions of arrays; traceable)."""

  variant: str
  deformation_frame: str

  def keypoints(
    self,
    canonical_kp: jax.Array,
    rotation: jax.Array,
    translation: jax.Array,
    scale: jax.Array,
    expression_deformation: jax.Array,
  ) -> jax.Array:
    batch = rotation.shape[0]
    canonical_kp = jnp.broadcast_to(canonical_kp, (batch, *canonical_kp.shape[1:]))
    if self.variant == "mmfa":
      return mmfa_keypoints(
        canonical_kp,
        rotation,
        translation,
        scale,
        expression_deformation,
        deformation_frame=self.deformation_frame,
      )
    posed = jnp.einsum("bij,bkj->bki", rotation, canonical_kp) + expression_deformation
    return jnp.reshape(scale, (batch, 1, 1)) * posed + translation[:, None, :]

  def rotation(self, yaw: Any, pitch: Any, roll: Any) -> jax.Array:
    if self.variant == "mmfa":
      return rotation_matrix(yaw, pitch, roll)
    return reference_rotation_matrix(yaw, pitch, roll)

  def driving_keypoints(
    self,
    source: Motion,
    driving: Motion,
    initial: Motion,
    *,
    mode: Mode,
    adapt_scale: bool,
    movement_scale: Any,
    given: Mapping[str, Any],
    canonical_kp: jax.Array,
  ) -> jax.Array:
    """``Animator.driving_keypoints``; face_vid2vid's adapted ``movement_scale`` (convex hulls,
    computed on the host) is an argument, MMFA's is computed here."""
    batch = driving.kp.shape[0]
    if self.variant == "face_vid2vid":
      kp_driving = driving.kp
      if given:
        angles = {
          k: jnp.full((batch,), given[k], jnp.float32) if k in given else getattr(driving, k)
          for k in ANGLES
        }
        rotation = self.rotation(angles["yaw"], angles["pitch"], angles["roll"])
        kp_driving = self.keypoints(
          canonical_kp,
          rotation,
          driving.translation,
          driving.scale,
          driving.expression_deformation,
        )
      if mode == "absolute":
        return kp_driving
      return relative_keypoints(source.kp, kp_driving, initial.kp, movement_scale)

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
      angles = dict(zip(ANGLES, rotation_matrix_to_euler(rotation)))
      angles.update({k: jnp.full((batch,), v, jnp.float32) for k, v in given.items()})
      rotation = self.rotation(angles["yaw"], angles["pitch"], angles["roll"])
    return self.keypoints(
      canonical_kp, rotation, translation, scale, driving.expression_deformation
    )


@dataclasses.dataclass(frozen=True)
class _Compiled:
  """One model's jitted functions (variables are arguments, so Animators can share them)."""

  model: AnimationModel
  encode: Any
  motion: Any
  render: Any
  deformation: Any
  animate_batch: Any


@functools.lru_cache(maxsize=8)
def _compiled_functions(model_config_json: str, dtype: str = "float32") -> _Compiled:
  """The model and its jitted functions, one set per model config and compute dtype: Animators of
  the same model (a notebook loading a checkpoint twice, a command run twice in one process) share
  compilations."""
  model_config = ml_collections.ConfigDict(json.loads(model_config_json))
  model = animation_model_from_config(model_config, dtype=DTYPES[dtype])
  apply = model.apply
  rules = _KeypointRules(
    model_config.get("variant", "mmfa"), model_config.get("deformation_frame", "canonical")
  )

  def animate_batch(
    variables: Any,
    state: Mapping[str, Any],
    frames: jax.Array,
    initial: Motion,
    use_first: jax.Array,
    movement: jax.Array,
    given_values: jax.Array,
    *,
    mode: Mode,
    adapt_scale: bool,
    given_names: tuple[str, ...],
  ) -> tuple[jax.Array, Motion]:
    """Driving frames ``(B, H, W, 3)`` -> generated frames, in one call: the frames' motion, the
    target keypoints and the render. ``initial`` is the first driving frame's motion, or, when
    ``use_first``, taken from this batch's first frame (returned for the next batches)."""
    canonical_kp = state["motion"]["canonical_kp"]
    motion = Motion.from_dict(apply(variables, frames, canonical_kp, method=_frame_motion))
    first = motion.take(slice(0, 1))
    initial = jax.tree.map(lambda a, b: jnp.where(use_first, a, b), first, initial)
    kp = rules.driving_keypoints(
      Motion.from_dict(state["motion"]),
      motion,
      initial,
      mode=mode,
      adapt_scale=adapt_scale,
      movement_scale=movement,
      given=dict(zip(given_names, given_values)),
      canonical_kp=canonical_kp,
    )
    return apply(variables, state, kp, method=_render), initial

  return _Compiled(
    model,
    jax.jit(functools.partial(apply, method=_encode)),
    jax.jit(functools.partial(apply, method=_frame_motion)),
    jax.jit(functools.partial(apply, method=_render)),
    jax.jit(functools.partial(apply, method=_expression_deformation)),
    jax.jit(animate_batch, static_argnames=("mode", "adapt_scale", "given_names")),
  )


# --------------------------------------------------------------------------------------------
# Loading


class Animator:
  """A model with its variables, compiled once per input shape, for animation and editing.

  Args:
    model_config: the ``model`` section of the config the variables belong to.
    variables: ``{'params', 'batch_stats'}`` of the whole ``AnimationModel``.
    image_size: the model's input and output size (pixels, square).
    batch_size: driving frames per compiled call.
    vae: ``(ExpressionVAE, its variables)`` for expression interpolation and sampling (MMFA).
    dtype: compute dtype of the networks, ``'float32'`` (default) or ``'bfloat16'`` (parameters
      stay float32; keypoints, poses and the returned frames are float32 either way).
  """

  def __init__(
    self,
    model_config: ml_collections.ConfigDict,
    variables: Mapping[str, Any],
    *,
    image_size: int,
    batch_size: int = 8,
    vae: tuple[ExpressionVAE, Mapping[str, Any]] | None = None,
    dtype: str | Any = "float32",
  ):
    if batch_size < 1:
      raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dtype = jnp.dtype(dtype).name
    if dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    self.dtype = dtype
    self.model_config = model_config
    compiled = _compiled_functions(model_config.to_json(sort_keys=True), dtype)
    self.model = compiled.model
    self._encode, self._motion, self._render = compiled.encode, compiled.motion, compiled.render
    self._deformation, self._animate_batch = compiled.deformation, compiled.animate_batch
    self.variant = model_config.get("variant", "mmfa")
    self.deformation_frame = model_config.get("deformation_frame", "canonical")
    self._rules = _KeypointRules(self.variant, self.deformation_frame)
    self.image_size = int(image_size)
    self.batch_size = int(batch_size)
    self.variables = {
      "params": variables["params"],
      "batch_stats": variables.get("batch_stats", {}),
    }
    self.vae = vae
    self.checkpoint: str | None = None  # the directory, when loaded by ``from_checkpoint``

  # -- loading
  @classmethod
  def from_checkpoint(
    cls,
    directory: str | os.PathLike,
    *,
    step: int | None = None,
    hopenet: str | os.PathLike | None = None,
    variant: str | None = None,
    batch_size: int = 8,
    dtype: str | Any = "float32",
  ) -> Animator:
    """Loads any mmfa_jax model checkpoint.

    ``directory`` is a converted face-vid2vid checkpoint (``tools/convert_torch_weights.py
    face_vid2vid``), a training run's workdir (MMFA or face_vid2vid, ``step`` or the latest), or an
    expression-VAE run's workdir (its MMFA run is loaded with it). MMFA runs with the frozen
    Hopenet take it from ``hopenet`` or the run's ``config.pretrained.hopenet``. ``variant``
    ('mmfa' or 'face_vid2vid'), when given, must match. ``dtype``: compute dtype (see ``Animator``).

    Raises:
      CheckpointKindError (a ``ValueError``): not an mmfa_jax model checkpoint, another variant,
        or a missing Hopenet; the message names the directory.
    """
    loaded = load_model(directory, step=step, hopenet=hopenet, variant=variant)
    animator = cls(
      loaded.model_config,
      loaded.variables,
      image_size=loaded.image_size,
      batch_size=batch_size,
      vae=loaded.vae,
      dtype=dtype,
    )
    animator.checkpoint = os.fspath(directory)
    return animator

  # -- building blocks
  def encode_source(self, source: Any) -> dict[str, Any]:
    """The source state (appearance volume, canonical keypoints, motion) of an image, batch 1."""
    image = as_image(source, self.image_size, "source")
    return self._encode(self.variables, image[None])

  def motion(self, frames: Any, source_state: Mapping[str, Any]) -> Motion:
    """Motion of frames ``(T, H, W, 3)`` (or one image) on the source's canonical keypoints."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
      frames = frames[None]
    images = np.stack([as_image(f, self.image_size, "frame") for f in frames])
    canonical_kp = source_state["motion"]["canonical_kp"]
    parts = []
    for chunk in _chunks(range(len(images)), self.batch_size):
      batch, count = self._padded(images[chunk[0] : chunk[-1] + 1])
      parts.append(
        Motion.from_dict(self._motion(self.variables, batch, canonical_kp)).take(slice(0, count))
      )
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

  def source_motion(self, source_state: Mapping[str, Any]) -> Motion:
    return Motion.from_dict(source_state["motion"])

  def keypoints(
    self,
    canonical_kp: jax.Array,
    rotation: jax.Array,
    translation: jax.Array,
    scale: jax.Array,
    expression_deformation: jax.Array,
  ) -> jax.Array:
    """Keypoints ``(B, K, 3)`` of a pose and expression on canonical keypoints (batch 1 or B).

    MMFA: ``ops.keypoints.mmfa_keypoints``. face_vid2vid: ``s (R x_c + delta) + t``, the
    reference's ``R x_c + t + delta`` at ``s = 1``.
    """
    return self._rules.keypoints(canonical_kp, rotation, translation, scale, expression_deformation)

  def rotation(self, yaw: Any, pitch: Any, roll: Any) -> jax.Array:
    """The variant's rotation matrices for angles in degrees (the reference's pi = 3.14 for
    face_vid2vid, the exact pi for MMFA)."""
    return self._rules.rotation(yaw, pitch, roll)

  def render(self, source_state: Mapping[str, Any], kp_driving: Any) -> np.ndarray:
    """Frames ``(B, H, W, 3)`` for target keypoints ``(B, K, 3)``, in compiled batches."""
    return np.concatenate(list(self.iter_render(source_state, kp_driving)))

  def iter_render(self, source_state: Mapping[str, Any], kp_driving: Any) -> Iterator[np.ndarray]:
    """``render`` one compiled batch at a time: ``(b, H, W, 3)`` arrays, b <= batch_size."""
    kp_driving = jnp.asarray(kp_driving, jnp.float32)
    for start in range(0, kp_driving.shape[0], self.batch_size):
      batch, count = self._padded(kp_driving[start : start + self.batch_size])
      yield np.asarray(self._render(self.variables, source_state, batch))[:count]

  def _padded(self, batch: Any) -> tuple[Any, int]:
    """A batch padded to ``batch_size`` rows (repeating the last), so one compilation serves all."""
    count = batch.shape[0]
    if count == self.batch_size:
      return batch, count
    pad = jnp.repeat(batch[-1:], self.batch_size - count, axis=0)
    return jnp.concatenate([jnp.asarray(batch), pad]), count

  # -- animation
  def driving_keypoints(
    self,
    source: Motion,
    driving: Motion,
    initial: Motion,
    *,
    mode: Mode = "relative",
    adapt_scale: bool = False,
    yaw: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
    canonical_kp: jax.Array,
  ) -> jax.Array:
    """Target keypoints ``(B, K, 3)`` for driving motions (see the module docstring)."""
    if mode not in ("relative", "absolute"):
      raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    overrides = {"yaw": yaw, "pitch": pitch, "roll": roll}
    movement = 1.0
    if self.variant == "face_vid2vid" and adapt_scale and mode == "relative":
      movement = adapt_movement_scale(source.kp, initial.kp)
    return self._rules.driving_keypoints(
      source,
      driving,
      initial,
      mode=mode,
      adapt_scale=adapt_scale,
      movement_scale=movement,
      given={k: v for k, v in overrides.items() if v is not None},
      canonical_kp=canonical_kp,
    )

  def iter_animate(
    self,
    source: Any,
    driving: Iterable[Any],
    *,
    mode: Mode = "relative",
    adapt_scale: bool = False,
    yaw: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
  ) -> Iterator[np.ndarray]:
    """Generated frames ``(H, W, 3)``, one per driving frame, streamed in batches.

    Each batch of ``batch_size`` driving frames is one compiled call (motion, target keypoints,
    render); the source state stays on the device between calls.
    """
    yield from self.iter_animate_encoded(
      self.encode_source(source),
      driving,
      mode=mode,
      adapt_scale=adapt_scale,
      yaw=yaw,
      pitch=pitch,
      roll=roll,
    )

  def iter_animate_encoded(
    self,
    state: Mapping[str, Any],
    driving: Iterable[Any],
    *,
    mode: Mode = "relative",
    adapt_scale: bool = False,
    yaw: float | None = None,
    pitch: float | None = None,
    roll: float | None = None,
  ) -> Iterator[np.ndarray]:
    """``iter_animate`` for a source already encoded (``encode_source``): one source, many
    driving videos, the source's encoding computed once."""
    if mode not in ("relative", "absolute"):
      raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    source_motion = self.source_motion(state)
    overrides = {"yaw": yaw, "pitch": pitch, "roll": roll}
    given_names = tuple(k for k in ANGLES if overrides[k] is not None)
    given_values = jnp.asarray([overrides[k] for k in given_names], jnp.float32)
    initial, use_first, movement = source_motion, True, jnp.ones((1,), jnp.float32)
    for chunk in _chunks(driving, self.batch_size):
      frames = np.stack([as_image(f, self.image_size, "driving frame") for f in chunk])
      count = frames.shape[0]
      if count < self.batch_size:  # pad with the last frame: one compilation serves every batch
        frames = np.concatenate([frames, np.repeat(frames[-1:], self.batch_size - count, 0)])
      if use_first and self.variant == "face_vid2vid" and adapt_scale and mode == "relative":
        # The reference's convex-hull scale is computed on the host, from the first frame.
        initial = self.motion(frames[:1], state)
        movement = jnp.asarray(adapt_movement_scale(source_motion.kp, initial.kp))
        use_first = False
      rendered, initial = self._animate_batch(
        self.variables,
        state,
        frames,
        initial,
        jnp.asarray(use_first),
        movement,
        given_values,
        mode=mode,
        adapt_scale=adapt_scale,
        given_names=given_names,
      )
      use_first = False
      yield from np.asarray(rendered)[:count]

  def animate(self, source: Any, driving: Any, **options: Any) -> np.ndarray:
    """``(T, H, W, 3)`` generated frames for a driving video ``(T, H, W, 3)`` (or one image);
    options as ``iter_animate``."""
    driving = np.asarray(driving)
    if driving.ndim == 3:
      driving = driving[None]
    if driving.ndim != 4 or driving.shape[0] == 0:
      raise ValueError(f"driving: want (T, H, W, 3) frames, got shape {driving.shape}")
    return np.stack(list(self.iter_animate(source, driving, **options)))

  # -- editing
  def edited_motion(
    self,
    source_state: Mapping[str, Any],
    *,
    yaw: Any = None,
    pitch: Any = None,
    roll: Any = None,
    translation: Any = None,
    scale: Any = None,
    expression_from: Any = None,
    expression_scale: float | Sequence[float] = 1.0,
  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``(rotation, translation, scale, expression_deformation)`` of an edit, batch B.

    Each attribute is a value (degrees; ``(3,)`` translation; scale factor), a sequence / array of
    B values, or an image whose attribute is taken; ``None`` keeps the source's. With nothing given
    the source's own motion comes back unchanged (an exact identity).
    """
    source = self.source_motion(source_state)

    def take(value: Any, name: str) -> Any:
      if value is None:
        return None
      array = np.asarray(value)
      if array.ndim == 3:  # an image
        return getattr(self.motion(array, source_state), name)
      return jnp.asarray(array, jnp.float32)

    values = {
      "yaw": take(yaw, "yaw"),
      "pitch": take(pitch, "pitch"),
      "roll": take(roll, "roll"),
      "translation": take(translation, "translation"),
      "scale": take(scale, "scale"),
    }
    deformation = source.expression_deformation
    if expression_from is not None:
      deformation = self.motion(expression_from, source_state).expression_deformation
    factor = jnp.asarray(expression_scale, jnp.float32)
    sizes = [
      jnp.atleast_1d(v).shape[0] for k, v in values.items() if v is not None and k != "translation"
    ]
    if values["translation"] is not None:
      sizes.append(jnp.atleast_2d(values["translation"]).shape[0])
    sizes.append(jnp.atleast_1d(factor).shape[0])
    batch = max(sizes)

    if any(values[k] is not None for k in ANGLES):
      angles = {
        k: jnp.broadcast_to(
          jnp.atleast_1d(values[k] if values[k] is not None else getattr(source, k)), (batch,)
        )
        for k in ANGLES
      }
      rotation = self.rotation(angles["yaw"], angles["pitch"], angles["roll"])
    else:
      rotation = jnp.broadcast_to(source.rotation, (batch, 3, 3))
    translation = values["translation"] if values["translation"] is not None else source.translation
    translation = jnp.broadcast_to(jnp.atleast_2d(translation), (batch, 3))
    scale = values["scale"] if values["scale"] is not None else source.scale
    scale = jnp.broadcast_to(jnp.atleast_1d(scale), (batch,))
    if expression_from is not None or np.any(np.asarray(expression_scale) != 1.0):
      deformation = (
        jnp.reshape(jnp.broadcast_to(jnp.atleast_1d(factor), (batch,)), (batch, 1, 1)) * deformation
      )
    deformation = jnp.broadcast_to(deformation, (batch, *deformation.shape[1:]))
    return rotation, translation, scale, deformation

  def edit_keypoints(self, source_state: Mapping[str, Any], **edits: Any) -> jax.Array:
    """Target keypoints ``(B, K, 3)`` of an edit (arguments as ``edited_motion``); with no
    attribute changed, exactly the source's own keypoints."""
    unchanged = all(v is None for k, v in edits.items() if k != "expression_scale")
    if unchanged and np.all(np.asarray(edits.get("expression_scale", 1.0)) == 1.0):
      return jnp.asarray(source_state["motion"]["kp"])
    rotation, translation, scale, deformation = self.edited_motion(source_state, **edits)
    return self.keypoints(
      source_state["motion"]["canonical_kp"], rotation, translation, scale, deformation
    )

  def edit(self, source: Any, **edits: Any) -> np.ndarray:
    """The source image with some motion attributes changed: ``(H, W, 3)`` for single values,
    ``(B, H, W, 3)`` when an attribute is given B values. Arguments: ``yaw``, ``pitch``, ``roll``
    (degrees), ``translation`` ((x, y, z)), ``scale``, ``expression_from`` (an image),
    ``expression_scale`` (see ``edited_motion``)."""
    state = self.encode_source(source)
    kp = self.edit_keypoints(state, **edits)
    frames = self.render(state, kp)
    return frames[0] if frames.shape[0] == 1 else frames

  def sweep(self, source: Any, attribute: str, values: Sequence[float], **fixed: Any) -> np.ndarray:
    """``(len(values), H, W, 3)`` frames with one attribute moving through ``values``.

    ``attribute``: yaw, pitch, roll (degrees), scale, tx, ty, tz (translation components), or
    expression_scale; ``fixed`` are further edits held constant.
    """
    state = self.encode_source(source)
    return self.render(state, self.sweep_keypoints(state, attribute, values, **fixed))

  def sweep_keypoints(
    self, source_state: Mapping[str, Any], attribute: str, values: Sequence[float], **fixed: Any
  ) -> jax.Array:
    """Target keypoints ``(len(values), K, 3)`` of ``sweep``."""
    values = np.asarray(values, np.float32)
    if attribute in ("tx", "ty", "tz"):
      base = fixed.pop("translation", None)
      base = np.asarray(
        self.source_motion(source_state).translation[0] if base is None else base, np.float32
      )
      translation = np.repeat(base[None], len(values), axis=0)
      translation[:, "xyz".index(attribute[1])] = values
      fixed["translation"] = translation
    elif attribute in ("yaw", "pitch", "roll", "scale", "expression_scale"):
      fixed[attribute] = values
    else:
      raise ValueError(
        f"attribute must be one of {', '.join(ATTRIBUTES)} or expression_scale, got {attribute!r}"
      )
    return self.edit_keypoints(source_state, **fixed)

  # -- expression VAE (MMFA)
  def require_vae(self) -> tuple[ExpressionVAE, Mapping[str, Any]]:
    """``(ExpressionVAE, variables)``; ``CheckpointKindError`` when the model has none."""
    if self.vae is None:
      raise CheckpointKindError(
        f"{self.checkpoint or 'this checkpoint'}: has no expression VAE: load the workdir of a "
        "configs/vox_vae.py run"
      )
    return self.vae

  def _render_latents(self, state: Mapping[str, Any], latents: jax.Array) -> np.ndarray:
    """Frames for VAE latents ``(N, latent_dim)``: decoded to expression features, then to
    deformations on the source's canonical keypoints; the source's pose is kept."""
    vae, vae_variables = self.require_vae()
    features = vae.apply(vae_variables, latents, method=ExpressionVAE.decode)  # (N, feature_dim)
    canonical_kp = state["motion"]["canonical_kp"]
    deformation = self._deformation(self.variables, features, canonical_kp)  # (N, K, 3)
    source = self.source_motion(state)
    n = latents.shape[0]
    kp = self.keypoints(
      canonical_kp,
      jnp.broadcast_to(source.rotation, (n, 3, 3)),
      jnp.broadcast_to(source.translation, (n, 3)),
      jnp.broadcast_to(source.scale, (n,)),
      deformation,
    )
    return self.render(state, kp)

  def interpolate_expression(self, source: Any, a: Any, b: Any, steps: int) -> np.ndarray:
    """``(steps, H, W, 3)``: the source's face going from image ``a``'s expression to ``b``'s
    along the VAE latent line ``z = (1 - alpha) mu(a) + alpha mu(b)`` (mmfa_delta.md 14)."""
    vae, vae_variables = self.require_vae()
    if steps < 2:
      raise ValueError(f"steps must be at least 2, got {steps}")
    state = self.encode_source(source)
    features = self.motion(
      np.stack([as_image(a, self.image_size, "a"), as_image(b, self.image_size, "b")]), state
    ).expression_latent
    mean, _ = vae.apply(vae_variables, features, method=ExpressionVAE.encode)  # (2, latent_dim)
    alpha = jnp.linspace(0.0, 1.0, steps)[:, None]
    return self._render_latents(state, (1 - alpha) * mean[0] + alpha * mean[1])

  def sample_expressions(self, source: Any, n: int, seed: int = 0) -> np.ndarray:
    """``(n, H, W, 3)``: the source with expressions decoded from ``z ~ N(0, I)``."""
    vae, _ = self.require_vae()
    state = self.encode_source(source)
    latents = jax.random.normal(jax.random.key(seed), (n, vae.latent_dim))
    return self._render_latents(state, latents)
