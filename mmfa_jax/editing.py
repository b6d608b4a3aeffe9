"""Editing with an ``inference.Animator`` (its ``Editing`` methods): motion attributes changed one
at a time, sweeps, and the expression VAE's interpolation and sampling (MMFA).

Angles are in degrees; translations are (x, y, z) in the normalised [-1, 1] keypoint space; a
scale is a factor. An attribute is a value, a sequence of B values (a batch of B edits), or an
image whose attribute is taken; ``None`` keeps the source's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.data.video import as_image
from mmfa_jax.model_loading import CheckpointKindError
from mmfa_jax.models.expression_vae import ExpressionVAE
from mmfa_jax.models.variants import ANGLES

ATTRIBUTES = ("yaw", "pitch", "roll", "scale", "tx", "ty", "tz")


def _batch_size(values: Mapping[str, Any], factor: jax.Array) -> int:
  sizes = [
    jnp.atleast_1d(v).shape[0] for k, v in values.items() if v is not None and k != "translation"
  ]
  if values["translation"] is not None:
    sizes.append(jnp.atleast_2d(values["translation"]).shape[0])
  sizes.append(jnp.atleast_1d(factor).shape[0])
  return max(sizes)


class Editing:
  """Editing and the expression VAE, mixed into ``inference.Animator``: methods over its
  ``encode_source``, ``motion``, ``source_motion``, ``expression_deformation``, ``render``,
  ``variant``, ``image_size``, ``vae`` and ``checkpoint``."""

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
    """``(rotation, translation, scale, expression_deformation)`` of an edit, batch B (module
    docstring); with nothing given the source's own motion comes back unchanged (an exact
    identity)."""
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
    batch = _batch_size(values, factor)

    if any(values[k] is not None for k in ANGLES):
      angles = {
        k: jnp.broadcast_to(
          jnp.atleast_1d(values[k] if values[k] is not None else getattr(source, k)), (batch,)
        )
        for k in ANGLES
      }
      rotation = self.variant.rotation(angles["yaw"], angles["pitch"], angles["roll"])
    else:
      rotation = jnp.broadcast_to(source.rotation, (batch, 3, 3))
    translation = values["translation"] if values["translation"] is not None else source.translation
    translation = jnp.broadcast_to(jnp.atleast_2d(translation), (batch, 3))
    scale = values["scale"] if values["scale"] is not None else source.scale
    scale = jnp.broadcast_to(jnp.atleast_1d(scale), (batch,))
    if expression_from is not None or np.any(np.asarray(expression_scale) != 1.0):
      factor = jnp.broadcast_to(jnp.atleast_1d(factor), (batch,))
      deformation = jnp.reshape(factor, (batch, 1, 1)) * deformation
    deformation = jnp.broadcast_to(deformation, (batch, *deformation.shape[1:]))
    return rotation, translation, scale, deformation

  def edit_keypoints(self, source_state: Mapping[str, Any], **edits: Any) -> jax.Array:
    """Target keypoints ``(B, K, 3)`` of an edit (arguments as ``edited_motion``); with no
    attribute changed, exactly the source's own keypoints."""
    unchanged = all(v is None for k, v in edits.items() if k != "expression_scale")
    if unchanged and np.all(np.asarray(edits.get("expression_scale", 1.0)) == 1.0):
      return jnp.asarray(source_state["motion"]["kp"])
    rotation, translation, scale, deformation = self.edited_motion(source_state, **edits)
    return self.variant.keypoints(
      source_state["motion"]["canonical_kp"], rotation, translation, scale, deformation
    )

  def sweep_keypoints(
    self,
    source_state: Mapping[str, Any],
    attribute: str,
    values: Sequence[float],
    **fixed: Any,
  ) -> jax.Array:
    """Target keypoints ``(len(values), K, 3)`` with one attribute (``ATTRIBUTES`` or
    ``expression_scale``; tx, ty, tz are translation components) moving through ``values``;
    ``fixed`` are further edits held constant."""
    values = np.asarray(values, np.float32)
    if attribute in ("tx", "ty", "tz"):
      base = fixed.pop("translation", None)
      if base is None:
        base = self.source_motion(source_state).translation[0]
      translation = np.repeat(np.asarray(base, np.float32)[None], len(values), axis=0)
      translation[:, "xyz".index(attribute[1])] = values
      fixed["translation"] = translation
    elif attribute in ("yaw", "pitch", "roll", "scale", "expression_scale"):
      fixed[attribute] = values
    else:
      raise ValueError(
        f"attribute must be one of {', '.join(ATTRIBUTES)} or expression_scale, got {attribute!r}"
      )
    return self.edit_keypoints(source_state, **fixed)

  def edit(self, source: Any, **edits: Any) -> np.ndarray:
    """The source image with some motion attributes changed: ``(H, W, 3)`` for single values,
    ``(B, H, W, 3)`` when an attribute is given B values. Arguments: ``yaw``, ``pitch``, ``roll``
    (degrees), ``translation`` ((x, y, z)), ``scale``, ``expression_from`` (an image),
    ``expression_scale`` (see ``edited_motion``)."""
    state = self.encode_source(source)
    frames = self.render(state, self.edit_keypoints(state, **edits))
    return frames[0] if frames.shape[0] == 1 else frames

  def sweep(self, source: Any, attribute: str, values: Sequence[float], **fixed: Any) -> np.ndarray:
    """``(len(values), H, W, 3)`` frames with one attribute moving through ``values``
    (``sweep_keypoints``)."""
    state = self.encode_source(source)
    return self.render(state, self.sweep_keypoints(state, attribute, values, **fixed))

  # -- the expression VAE (MMFA)
  def require_vae(self) -> tuple[ExpressionVAE, Mapping[str, Any]]:
    """``(ExpressionVAE, variables)``; ``CheckpointKindError`` when the model has none."""
    if self.vae is None:
      raise CheckpointKindError(
        f"{self.checkpoint or 'this checkpoint'}: has no expression VAE: load the workdir of a "
        "configs/vox_vae.py run"
      )
    return self.vae

  def render_latents(self, state: Mapping[str, Any], latents: jax.Array) -> np.ndarray:
    """Frames for VAE latents ``(N, latent_dim)``: decoded to expression features, then to
    deformations on the source's canonical keypoints; the source's pose is kept."""
    vae, vae_variables = self.require_vae()
    features = vae.apply(vae_variables, latents, method=ExpressionVAE.decode)  # (N, feature_dim)
    canonical_kp = state["motion"]["canonical_kp"]
    deformation = self.expression_deformation(features, canonical_kp)  # (N, K, 3)
    source = self.source_motion(state)
    n = latents.shape[0]
    kp = self.variant.keypoints(
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
    size = self.image_size
    features = self.motion(
      np.stack([as_image(a, size, "a"), as_image(b, size, "b")]), state
    ).expression_latent
    mean, _ = vae.apply(vae_variables, features, method=ExpressionVAE.encode)  # (2, latent_dim)
    alpha = jnp.linspace(0.0, 1.0, steps)[:, None]
    return self.render_latents(state, (1 - alpha) * mean[0] + alpha * mean[1])

  def sample_expressions(self, source: Any, n: int, seed: int = 0) -> np.ndarray:
    """``(n, H, W, 3)``: the source with expressions decoded from ``z ~ N(0, I)``."""
    vae, _ = self.require_vae()
    state = self.encode_source(source)
    latents = jax.random.normal(jax.random.key(seed), (n, vae.latent_dim))
    return self.render_latents(state, latents)
