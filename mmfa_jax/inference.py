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
Loading is ``model_loading.load_model``; editing and the expression VAE are ``mmfa_jax.editing``
(the methods here call it); the variant's conventions are ``models.variants``.

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
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmfa_jax import editing
from mmfa_jax.data.video import as_image
from mmfa_jax.model_loading import CheckpointKindError, load_model
from mmfa_jax.models.animation import DTYPES, AnimationModel, animation_model_from_config
from mmfa_jax.models.expression_vae import ExpressionVAE
from mmfa_jax.models.variants import ANGLES, Mode, Variant, variant_from_config
from mmfa_jax.ops.keypoints import adapt_movement_scale

__all__ = ["ANGLES", "Animator", "CheckpointKindError", "Mode", "Motion", "as_image"]


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


def on_device(tree: Any) -> Any:
  """``tree`` with its host (numpy) leaves copied to the default device once; ``jax.Array`` leaves
  stay where they are. Variables given as numpy arrays would otherwise be copied to the device on
  every compiled call (661 MiB for vox_face_vid2vid: about 70 ms per call on an H200)."""
  return jax.tree.map(lambda x: x if isinstance(x, jax.Array) else jax.device_put(x), tree)


def _float32(tree: Any) -> Any:
  """Floating leaves as float32 (motion and keypoint maths stay float32 whatever the compute)."""
  return jax.tree.map(
    lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


def _encode(model: AnimationModel, source: jax.Array, head_pose: Any) -> dict[str, Any]:
  state = dict(model.encode_source(source, False, head_pose))
  state["motion"] = _float32(state["motion"])
  return state


def _frame_motion(
  model: AnimationModel, frames: jax.Array, canonical_kp: jax.Array, head_pose: Any
) -> dict:
  return _float32(model.frame_motion(frames, canonical_kp, head_pose))


def _render(model: AnimationModel, state: dict[str, Any], kp_driving: jax.Array) -> jax.Array:
  return model.render(state, kp_driving)["prediction"].astype(jnp.float32)


def _expression_deformation(
  model: AnimationModel, latent: jax.Array, canonical_kp: jax.Array
) -> jax.Array:
  return model.expression_deformation(latent, canonical_kp).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class _Compiled:
  """One model's jitted functions (variables are arguments, so Animators can share them); the
  frozen networks' variables (``frozen``, the MMFA Hopenet) are the last positional argument of
  those that read frames."""

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
  variant = variant_from_config(model_config)
  apply = model.apply

  def head_pose(frozen: Mapping[str, Any], frames: jax.Array) -> Any:
    return variant.head_pose(frozen, frames, DTYPES[dtype])

  def encode(variables: Any, source: jax.Array, frozen: Mapping[str, Any]) -> dict[str, Any]:
    return apply(variables, source, head_pose(frozen, source), method=_encode)

  def motion(variables: Any, frames: jax.Array, canonical_kp: jax.Array, frozen: Any) -> dict:
    return apply(variables, frames, canonical_kp, head_pose(frozen, frames), method=_frame_motion)

  def animate_batch(
    variables: Any,
    state: Mapping[str, Any],
    frames: jax.Array,
    initial: Motion,
    use_first: jax.Array,
    movement: jax.Array,
    given_values: jax.Array,
    frozen: Mapping[str, Any],
    *,
    mode: Mode,
    adapt_scale: bool,
    given_names: tuple[str, ...],
  ) -> tuple[jax.Array, Motion]:
    """Driving frames ``(B, H, W, 3)`` -> generated frames, in one call: the frames' motion, the
    target keypoints and the render. ``initial`` is the first driving frame's motion, or, when
    ``use_first``, taken from this batch's first frame (returned for the next batches)."""
    canonical_kp = state["motion"]["canonical_kp"]
    driving = Motion.from_dict(motion(variables, frames, canonical_kp, frozen))
    first = driving.take(slice(0, 1))
    initial = jax.tree.map(lambda a, b: jnp.where(use_first, a, b), first, initial)
    kp = variant.driving_keypoints(
      Motion.from_dict(state["motion"]),
      driving,
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
    jax.jit(encode),
    jax.jit(motion),
    jax.jit(functools.partial(apply, method=_render)),
    jax.jit(functools.partial(apply, method=_expression_deformation)),
    jax.jit(animate_batch, static_argnames=("mode", "adapt_scale", "given_names")),
  )


# --------------------------------------------------------------------------------------------
# The Animator


class Animator(editing.Editing):
  """A model with its variables, compiled once per input shape, for animation and editing
  (``editing.Editing``: ``edit``, ``sweep``, ``interpolate_expression``, ``sample_expressions`` ...).

  Args:
    model_config: the ``model`` section of the config the variables belong to.
    variables: ``{'params', 'batch_stats'}`` of the ``AnimationModel``.
    image_size: the model's input and output size (pixels, square).
    batch_size: driving frames per compiled call.
    vae: ``(ExpressionVAE, its variables)`` for expression interpolation and sampling (MMFA).
    dtype: compute dtype of the networks, ``'float32'`` (default) or ``'bfloat16'`` (parameters
      stay float32; keypoints, poses and the returned frames are float32 either way).
    frozen: the frozen networks' variables the model reads, ``{'hopenet': ...}`` for an MMFA model
      with the pretrained Hopenet (``load_model`` gives them).

  ``variant`` is the model's ``models.variants.Variant``.
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
    frozen: Mapping[str, Any] | None = None,
  ):
    if batch_size < 1:
      raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dtype = jnp.dtype(dtype).name
    if dtype not in DTYPES:
      raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    self.variant: Variant = variant_from_config(model_config)
    self.frozen = on_device(dict(frozen or {}))
    if self.variant.frozen_pose and "hopenet" not in self.frozen:
      raise ValueError("this MMFA model reads the frozen Hopenet: pass frozen={'hopenet': ...}")
    self.dtype = dtype
    self.model_config = model_config
    compiled = _compiled_functions(model_config.to_json(sort_keys=True), dtype)
    self.model = compiled.model
    self._encode, self._motion, self._render = compiled.encode, compiled.motion, compiled.render
    self._deformation, self._animate_batch = compiled.deformation, compiled.animate_batch
    self.image_size = int(image_size)
    self.batch_size = int(batch_size)
    self.variables = on_device({
      "params": variables["params"],
      "batch_stats": variables.get("batch_stats", {}),
    })  # fmt: skip
    self.vae = None if vae is None else (vae[0], on_device(vae[1]))
    self.checkpoint: str | None = None  # the directory, when loaded by ``from_checkpoint``

  @classmethod
  def from_checkpoint(
    cls,
    directory: str | os.PathLike,
    *,
    step: int | None = None,
    hopenet: str | os.PathLike | None = None,
    variant: str | None = None,
    averaged: bool = True,
    batch_size: int = 8,
    dtype: str | Any = "float32",
  ) -> Animator:
    """Loads any mmfa_jax model checkpoint (``model_loading.load_model``: a converted
    face-vid2vid checkpoint, a training run's workdir at ``step`` or the latest, an expression-VAE
    run's workdir). MMFA runs with the frozen Hopenet take it from ``hopenet`` or the run's
    ``config.pretrained.hopenet``. ``variant`` ('mmfa' or 'face_vid2vid'), when given, must match.
    ``averaged``: a run that kept a parameter average (``optim.ema_decay``) is loaded with it;
    False loads its last parameters.

    Raises:
      CheckpointKindError (a ``ValueError``): not an mmfa_jax model checkpoint, another variant,
        or a missing Hopenet; the message names the directory.
    """
    start = time.perf_counter()
    loaded = load_model(directory, step=step, hopenet=hopenet, variant=variant, averaged=averaged)
    logging.info("%s: weights read in %.1f s", os.fspath(directory), time.perf_counter() - start)
    animator = cls(
      loaded.model_config,
      loaded.variables,
      image_size=loaded.image_size,
      batch_size=batch_size,
      vae=loaded.vae,
      dtype=dtype,
      frozen=loaded.frozen,
    )
    animator.checkpoint = os.fspath(directory)
    return animator

  # -- building blocks
  def encode_source(self, source: Any) -> dict[str, Any]:
    """The source state (appearance volume, canonical keypoints, motion) of an image, batch 1."""
    image = as_image(source, self.image_size, "source")
    return self._encode(self.variables, image[None], self.frozen)

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
      motion = self._motion(self.variables, batch, canonical_kp, self.frozen)
      parts.append(Motion.from_dict(motion).take(slice(0, count)))
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

  def source_motion(self, source_state: Mapping[str, Any]) -> Motion:
    return Motion.from_dict(source_state["motion"])

  def expression_deformation(self, features: jax.Array, canonical_kp: jax.Array) -> jax.Array:
    """MMFA's expression decoder: features ``(N, d)`` on canonical keypoints -> ``(N, K, 3)``."""
    return self._deformation(self.variables, features, canonical_kp)

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
    _check_mode(mode)
    given = {k: v for k, v in zip(ANGLES, (yaw, pitch, roll)) if v is not None}
    movement = 1.0
    if self.variant.convex_hull_scale(mode, adapt_scale):
      movement = adapt_movement_scale(source.kp, initial.kp)
    return self.variant.driving_keypoints(
      source,
      driving,
      initial,
      mode=mode,
      adapt_scale=adapt_scale,
      movement_scale=movement,
      given=given,
      canonical_kp=canonical_kp,
    )

  def iter_animate(
    self, source: Any, driving: Iterable[Any], **options: Any
  ) -> Iterator[np.ndarray]:
    """Generated frames ``(H, W, 3)``, one per driving frame, streamed in batches. ``options``:
    ``mode`` ('relative' or 'absolute'), ``adapt_scale``, ``yaw``, ``pitch``, ``roll``
    (``iter_animate_encoded``).

    Each batch of ``batch_size`` driving frames is one compiled call (motion, target keypoints,
    render); the source state stays on the device between calls.
    """
    yield from self.iter_animate_encoded(self.encode_source(source), driving, **options)

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
    _check_mode(mode)
    source_motion = self.source_motion(state)
    overrides = dict(zip(ANGLES, (yaw, pitch, roll)))
    given_names = tuple(k for k in ANGLES if overrides[k] is not None)
    # Host values reach the device by explicit copies only (no implicit transfer per call).
    given_values = jax.device_put(np.asarray([overrides[k] for k in given_names], np.float32))
    initial, use_first, movement = source_motion, True, jax.device_put(np.ones(1, np.float32))
    for chunk in _chunks(driving, self.batch_size):
      frames = np.stack([as_image(f, self.image_size, "driving frame") for f in chunk])
      count = frames.shape[0]
      if count < self.batch_size:  # pad with the last frame: one compilation serves every batch
        frames = np.concatenate([frames, np.repeat(frames[-1:], self.batch_size - count, 0)])
      if use_first and self.variant.convex_hull_scale(mode, adapt_scale):
        # The reference's convex-hull scale is computed on the host, from the first frame.
        initial = self.motion(frames[:1], state)
        movement = jax.device_put(adapt_movement_scale(source_motion.kp, initial.kp))
        use_first = False
      rendered, initial = self._animate_batch(
        self.variables,
        state,
        jax.device_put(frames),
        initial,
        jax.device_put(np.asarray(use_first)),
        movement,
        given_values,
        self.frozen,
        mode=mode,
        adapt_scale=adapt_scale,
        given_names=given_names,
      )
      use_first = False
      yield from np.asarray(rendered)[:count]

  def animate(self, source: Any, driving: Any, **options: Any) -> np.ndarray:
    """``(T, H, W, 3)`` generated frames for a driving video ``(T, H, W, 3)`` (or one image);
    options as ``iter_animate_encoded``."""
    driving = np.asarray(driving)
    if driving.ndim == 3:
      driving = driving[None]
    if driving.ndim != 4 or driving.shape[0] == 0:
      raise ValueError(f"driving: want (T, H, W, 3) frames, got shape {driving.shape}")
    return np.stack(list(self.iter_animate(source, driving, **options)))


def _check_mode(mode: str) -> None:
  if mode not in ("relative", "absolute"):
    raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
