"""The training objective: the networks a config builds, the training forward pass, and the weighted
loss terms of MMFA (mmfa_delta.md) or face-vid2vid (architecture.md 9) as pure functions.

The forward pass per pair follows mmfa_delta.md 13 (MMFA) or architecture.md 9 (face-vid2vid).
Frozen networks are inputs of the step, not part of any train state: the MMFA model's head pose
comes from the frozen Hopenet's variables in ``frozen`` (``Variant.head_pose``), beside the trained
variables, never inside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmfa_jax import losses
from mmfa_jax.models.animation import DTYPES, AnimationModel, animation_model_from_config
from mmfa_jax.models.discriminator import MultiScaleDiscriminator
from mmfa_jax.models.hopenet import Hopenet, hopenet_head_pose
from mmfa_jax.models.landmarks import landmarks_from_config
from mmfa_jax.models.perceptual import VGG19, VGG19_MIN_SIZE, VGGFace
from mmfa_jax.models.variants import Variant, variant_from_config
from mmfa_jax.ops.layers import sequential_running_statistics
from mmfa_jax.ops.pyramid import image_pyramid
from mmfa_jax.ops.tps import sample_similarity_transform, sample_tps_transform, warp_image


class LandmarkNetwork(Protocol):
  """A frozen, differentiable 2D landmark detector for the landmark loss (mmfa_delta 10).

  ``apply(variables, images)`` maps ``(B, H, W, 3)`` images in [0, 1] to ``(B, L, 2)`` landmarks
  in normalised (x, y) coordinates; ``point_weights`` ``(L,)`` carries the per-part factors (eyes
  and brows, mouth, the rest).
  """

  point_weights: np.ndarray

  def apply(self, variables: Any, images: jax.Array) -> jax.Array: ...


def required_pretrained(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The frozen networks a config needs (kinds of ``config.pretrained``)."""
  kinds = list(variant_from_config(config.model).frozen_networks(config.loss))
  if config.loss.perceptual_features == "vgg19":
    kinds.append("vgg19")
  elif config.loss.perceptual_features != "pixels":
    raise ValueError(
      f"config.loss.perceptual_features must be 'vgg19' or 'pixels', got "
      f"{config.loss.perceptual_features!r}"
    )
  if config.loss.vggface > 0:
    kinds.append("vggface")
  if config.loss.landmark > 0 and "landmarks" in config.model:  # the built-in detector
    kinds.append("landmarks")
  if "vgg19" in kinds:
    _check_vgg19_sizes(config)
  return tuple(kinds)


def _check_vgg19_sizes(config: ml_collections.ConfigDict) -> None:
  """Refuses perceptual pyramids whose smallest image VGG19 cannot see (its deepest layer would be
  empty and the loss NaN, so every generator update would be skipped)."""
  if config.model.generator.get("kind", "multiscale") == "multiscale":  # its pyramids stop here
    smallest, where = int(config.loss.perceptual_min_size), "config.loss.perceptual_min_size"
  else:
    scale = min(config.perceptual_scales)
    smallest = int(config.image_size * scale)
    where = f"config.perceptual_scales ({scale} of image_size {config.image_size})"
  if smallest < VGG19_MIN_SIZE:
    raise ValueError(f"{where} gives {smallest} px perceptual images; VGG19's four poolings need "
                     f"at least {VGG19_MIN_SIZE} px (drop the smaller scales or use pixels)")  # fmt: skip


# --------------------------------------------------------------------------------------------
# Networks and the objective


@dataclasses.dataclass(frozen=True)
class Networks:
  """Every module the objective uses; frozen ones are ``None`` when the config does not use them."""

  model: AnimationModel
  discriminator: MultiScaleDiscriminator
  hopenet: Hopenet | None
  vgg19: VGG19 | None
  vggface: VGGFace | None
  landmarks: LandmarkNetwork | None

  @classmethod
  def from_config(
    cls, config: ml_collections.ConfigDict, landmarks: LandmarkNetwork | None = None
  ) -> Networks:
    dtype = DTYPES[config.train.dtype]
    kinds = required_pretrained(config)
    disc = dict(config.model.discriminator)
    disc["scales"] = tuple(float(s) for s in disc["scales"])
    if config.loss.landmark > 0 and landmarks is None:
      if "landmarks" not in config.model:
        raise ValueError("config.loss.landmark > 0 needs a frozen landmark network: "
                         "config.model.landmarks or Trainer(config, landmarks=...)")  # fmt: skip
      landmarks = landmarks_from_config(config.model, dtype=dtype)
    return cls(
      model=animation_model_from_config(config.model, dtype=dtype),
      discriminator=MultiScaleDiscriminator(**disc, dtype=dtype),
      hopenet=Hopenet(**dict(config.model.hopenet), dtype=dtype) if "hopenet" in kinds else None,
      vgg19=VGG19(dtype=dtype) if "vgg19" in kinds else None,
      vggface=VGGFace(dtype=dtype) if "vggface" in kinds else None,
      landmarks=landmarks if config.loss.landmark > 0 else None,
    )


def _motion_of_each(
  model: AnimationModel, variables: Mapping[str, Any], method: Callable[..., Any], *stacked: Any
) -> tuple[Any, Any]:
  """``method`` of the motion estimator for each entry of the leading axis of ``stacked``, in
  train mode, as one batched call: each entry gets its own BatchNorm batch statistics, and the
  running statistics end as N calls one after another would leave them
  (``ops.layers.sequential_running_statistics``). Returns ``(outputs with the leading axis,
  new batch_stats)``.

  The networks are traced once instead of N times (the synthetic CPU step: 141 convolutions
  instead of 316, tracing and lowering 9.5 s instead of 11-13 s; XLA's compile time unchanged).
  """

  def one(*args: Any) -> tuple[Any, Any]:
    out, updated = model.apply(variables, *args, True, method=method, mutable=["batch_stats"])
    return out, updated["batch_stats"]["motion_estimator"]

  outputs, per_call = jax.vmap(one)(*stacked)
  stats = dict(variables["batch_stats"])
  stats["motion_estimator"] = sequential_running_statistics(stats["motion_estimator"], per_call)
  return outputs, stats


def _canonical_keypoints(model: AnimationModel, image: jax.Array, train: bool) -> jax.Array:
  return model.motion_estimator.canonical_keypoints(image, train)


def _frame_motion(
  model: AnimationModel, image: jax.Array, canonical_kp: jax.Array, head_pose: Any, train: bool
) -> dict[str, jax.Array]:
  return model.motion_estimator.frame_motion(image, canonical_kp, train, head_pose)


def _generate(
  model: AnimationModel, source: jax.Array, kp_source: jax.Array, kp_driving: jax.Array
) -> dict[str, jax.Array]:
  return model.image_generator(source, kp_source, kp_driving, True)


def _expression_latent(model: AnimationModel, image: jax.Array) -> jax.Array:
  return model.motion_estimator.exp_encoder(image, True)


def _canonical_of_each(
  model: AnimationModel, variables: Mapping[str, Any], frames: list[jax.Array]
) -> tuple[jax.Array, Any]:
  """Canonical keypoints ``(N, B, K, 3)`` of N frame batches (train mode) and the new
  batch_stats; one frame batch is one plain call."""
  if len(frames) > 1:
    return _motion_of_each(model, variables, _canonical_keypoints, jnp.stack(frames))
  one, updated = model.apply(
    variables, frames[0], True, method=_canonical_keypoints, mutable=["batch_stats"]
  )
  return one[None], updated["batch_stats"]


def training_forward(
  model: AnimationModel,
  variant: Variant,
  variables: Mapping[str, Any],
  frozen: Mapping[str, Any],
  source: jax.Array,
  driving: jax.Array,
  transformed: jax.Array,
  augmented: jax.Array | None,
  with_identity: bool,
) -> tuple[dict[str, Any], Any]:
  """One training forward pass (train mode); returns ``(outputs, new batch_stats)``.

  ``variables``: trained; ``frozen``: the frozen networks' (``Variant.head_pose``). MMFA (mmfa_delta 13): canonical keypoints of the source, of the TPS-warped driving frame and
  (for the identity loss) of the driving frame; motion of source and driving on the source's
  canonical keypoints and of the warped frame on its **own** (equivariance); generated frames; the
  expression latent of the augmented driving frame. face-vid2vid (architecture.md 9): canonical
  keypoints of the source only; every motion on them, as the reference.

  Repeated calls of one network run batched (``_motion_of_each``); BatchNorm's running
  statistics are updated as if the calls ran one after another in the order listed here.
  """
  own_canonical = variant.own_transformed_canonical
  canonical, stats = _canonical_of_each(
    model,
    variables,
    [source, transformed] + ([driving] if with_identity else []) if own_canonical else [source],
  )
  canonical_kp = canonical[0]  # (B, K, 3)
  transformed_canonical = canonical[1] if own_canonical else canonical_kp
  variables = {**variables, "batch_stats": stats}
  frames = jnp.stack([source, driving, transformed])  # (3, B, H, W, 3)
  head_poses = variant.head_pose(frozen, frames.reshape(-1, *frames.shape[2:]), model.dtype)
  head_poses = jax.tree.map(lambda x: x.reshape(frames.shape[:2]), head_poses)  # (3, B) each
  motions, stats = _motion_of_each(
    model,
    variables,
    _frame_motion,
    frames,
    jnp.stack([canonical_kp, canonical_kp, transformed_canonical]),  # (3, B, K, 3)
    head_poses,
  )
  source_motion, driving_motion, transformed_motion = (
    jax.tree.map(lambda x, i=i: x[i], motions) for i in range(3)
  )
  source_motion["canonical_kp"] = canonical_kp
  variables = {**variables, "batch_stats": stats}
  generated, updated = model.apply(
    variables,
    source,
    source_motion["kp"],
    driving_motion["kp"],
    method=_generate,
    mutable=["batch_stats"],
  )
  out = dict(
    generated=generated,
    source_motion=source_motion,
    driving_motion=driving_motion,
    transformed_motion=transformed_motion,
  )
  if own_canonical and with_identity:
    out["driving_canonical_kp"] = canonical[2]
  if augmented is not None:
    variables = {**variables, "batch_stats": updated["batch_stats"]}
    out["augmented_latent"], updated = model.apply(
      variables, augmented, method=_expression_latent, mutable=["batch_stats"]
    )
  return out, updated["batch_stats"]


def _float32(tree: Any) -> Any:
  return jax.tree.map(
    lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree
  )


class Objective:
  """The weighted loss terms of a config, as pure functions of variables and a batch."""

  def __init__(self, config: ml_collections.ConfigDict, networks: Networks):
    self.config = config
    self.loss = config.loss
    self.nets = networks
    self.variant = variant_from_config(config.model)
    self.disc_scales = tuple(float(s) for s in config.model.discriminator.scales)

  @property
  def reads_discriminator(self) -> bool:  # the GAN terms are on (else it is not trained)
    return _gan_enabled(self.loss)

  # -- frozen feature extractors
  def perceptual_features(self, frozen: Mapping[str, Any]) -> tuple[Callable, tuple[float, ...]]:
    """``(features(images) -> list of feature maps, layer weights)``: VGG19's or the pixels'."""
    weights = tuple(self.loss.perceptual_layer_weights)
    if self.loss.perceptual_features == "pixels":
      return (lambda images: [images]), weights[:1]
    vgg19, variables = self.nets.vgg19, frozen["vgg19"]
    return (lambda images: _float32(vgg19.apply(variables, images))), weights

  def discriminate(
    self, params: Any, batch_stats: Any, images: jax.Array
  ) -> tuple[dict[float, Any], Any]:
    """Discriminator (train mode: one spectral-norm power iteration) on an image pyramid."""
    outputs, updated = self.nets.discriminator.apply(
      {"params": params, "batch_stats": batch_stats},
      image_pyramid(images, self.disc_scales),
      True,
      mutable=["batch_stats"],
    )
    return _float32(outputs), updated["batch_stats"]

  # -- generator side
  def generator_loss(
    self,
    params: Any,
    batch_stats: Any,
    disc_variables: tuple[Any, Any],
    frozen: Mapping[str, Any],
    batch: Mapping[str, jax.Array],
    rng: jax.Array,
  ) -> tuple[jax.Array, dict[str, Any]]:
    """Total weighted generator loss and ``aux`` (terms, new statistics, outputs)."""
    loss = self.loss
    source, driving = batch["source"], batch["driving"]
    batch_size = source.shape[0]
    tps_rng, similarity_rng = jax.random.split(rng)
    transform = sample_tps_transform(tps_rng, batch_size, **dict(self.config.transform))
    transformed = warp_image(transform, driving)  # (B, H, W, 3)
    augmented = None
    if self.variant.trains_term("representation") and loss.representation > 0:
      similarity = dict(loss.similarity)
      similarity["scale_range"] = tuple(similarity["scale_range"])
      augmented = warp_image(
        sample_similarity_transform(similarity_rng, batch_size, **similarity), driving
      )
    with_identity = self.variant.trains_term("identity") and loss.identity > 0
    out, new_stats = training_forward(
      self.nets.model,
      self.variant,
      {"params": params, "batch_stats": batch_stats},
      frozen,
      source,
      driving,
      transformed,
      augmented,
      with_identity,
    )
    out = _float32(out)
    inputs = TermInputs(self, batch, frozen, out, transform, *disc_variables)
    terms = {
      name: compute(inputs)
      for name, (enabled, compute) in GENERATOR_TERMS.items()
      if enabled(loss) and self.variant.trains_term(name)
    }
    total = sum(terms.values())
    return total, dict(terms=terms, batch_stats=new_stats, disc_stats=inputs.disc_stats, out=out)

  # -- discriminator side
  def discriminator_loss(
    self, params: Any, batch_stats: Any, real: jax.Array, fake: jax.Array
  ) -> tuple[jax.Array, Any]:
    fake_out, batch_stats = self.discriminate(params, batch_stats, jax.lax.stop_gradient(fake))
    real_out, batch_stats = self.discriminate(params, batch_stats, real)
    scales = sorted(fake_out)
    value = self.loss.discriminator_gan * losses.discriminator_gan(
      [real_out[s][1] for s in scales], [fake_out[s][1] for s in scales], self.loss.gan_mode
    )
    return value, batch_stats


@dataclasses.dataclass
class TermInputs:
  """What the generator's loss terms read: the batch, ``training_forward``'s outputs (float32),
  the equivariance loss's TPS transform, the frozen networks and the discriminator, run on the
  prediction then the driving frame (``discriminated``, on first use, statistics in that order)."""

  objective: Objective
  batch: Mapping[str, jax.Array]
  frozen: Mapping[str, Any]
  out: dict[str, Any]
  transform: Any
  disc_params: Any
  disc_stats: Any
  _discriminated: tuple[dict, dict] | None = None

  @property
  def prediction(self) -> jax.Array:
    return self.out["generated"]["prediction"]  # (B, H, W, 3)

  @property
  def driving_motion(self) -> dict[str, jax.Array]:
    return self.out["driving_motion"]

  def discriminated(self) -> tuple[dict, dict]:
    """Discriminator outputs ``(fake, real)`` per scale."""
    if self._discriminated is None:
      fake, self.disc_stats = self.objective.discriminate(
        self.disc_params, self.disc_stats, self.prediction
      )
      real, self.disc_stats = self.objective.discriminate(
        self.disc_params, self.disc_stats, self.batch["driving"]
      )
      self._discriminated = (fake, real)
    return self._discriminated


def _perceptual(x: TermInputs) -> jax.Array:
  features, layer_weights = x.objective.perceptual_features(x.frozen)
  scales, min_size = (
    tuple(x.objective.config.perceptual_scales),
    x.objective.loss.perceptual_min_size,
  )
  return losses.generated_perceptual(
    features, x.out["generated"], x.batch["driving"], layer_weights, scales, min_size
  )


def _vggface(x: TermInputs) -> jax.Array:
  vggface, variables = x.objective.nets.vggface, x.frozen["vggface"]
  return losses.vggface_perceptual(
    lambda images: _float32(vggface.apply(variables, images)),
    x.prediction,
    x.batch["driving"],
    x.objective.loss.vggface,
  )


def _generator_gan(x: TermInputs) -> jax.Array:
  fake, _ = x.discriminated()
  loss = x.objective.loss
  return loss.generator_gan * losses.generator_gan(
    [fake[s][1] for s in sorted(fake)], loss.gan_mode
  )


def _feature_matching(x: TermInputs) -> jax.Array:
  fake, real = x.discriminated()
  weights = tuple(x.objective.loss.feature_matching)
  return sum(losses.feature_matching(real[s][0], fake[s][0], weights) for s in sorted(fake))


def _equivariance(x: TermInputs) -> jax.Array:
  return x.objective.loss.equivariance * losses.equivariance(
    x.driving_motion["kp"], x.out["transformed_motion"]["kp"], x.transform
  )


def _keypoint_prior(x: TermInputs) -> jax.Array:
  loss = x.objective.loss
  return loss.keypoint_prior * losses.keypoint_prior(
    x.driving_motion["kp"], loss.keypoint_distance, loss.keypoint_depth
  )


def _deformation_prior(x: TermInputs) -> jax.Array:
  return x.objective.loss.deformation_prior * losses.deformation_prior(
    x.driving_motion["expression_deformation"]
  )


def _representation(x: TermInputs) -> jax.Array:
  return x.objective.loss.representation * losses.representation(
    x.driving_motion["expression_latent"], x.out["augmented_latent"]
  )


def _identity(x: TermInputs) -> jax.Array:
  return x.objective.loss.identity * losses.identity_consistency(
    x.out["source_motion"]["canonical_kp"], x.out["driving_canonical_kp"]
  )


def _headpose(x: TermInputs) -> jax.Array:
  target = hopenet_head_pose(x.objective.nets.hopenet, x.frozen["hopenet"], x.batch["driving"])
  return x.objective.loss.headpose * losses.headpose(x.driving_motion, target)


def _landmark(x: TermInputs) -> jax.Array:
  detector, variables = x.objective.nets.landmarks, x.frozen["landmarks"]
  return x.objective.loss.landmark * losses.landmark(
    detector.apply(variables, x.prediction),
    detector.apply(variables, x.batch["driving"]),
    jnp.asarray(detector.point_weights, jnp.float32),
  )


def _gan_enabled(loss: Any) -> bool:
  return loss.generator_gan > 0 or any(w > 0 for w in loss.feature_matching)


def _weighted(name: str) -> Callable[[Any], bool]:
  return lambda loss: loss[name] > 0


# The generator's loss terms in summation order: {name: (enabled(loss config), term)}; a term
# runs when enabled and its variant has it (``Variant.trains_term``). A term's weight is applied
# inside it (some weight per layer or per scale).
GENERATOR_TERMS: dict[str, tuple[Callable[[Any], bool], Callable[[TermInputs], jax.Array]]] = {
  "perceptual": (lambda loss: True, _perceptual),
  "vggface": (_weighted("vggface"), _vggface),
  "generator_gan": (_gan_enabled, _generator_gan),
  "feature_matching": (_gan_enabled, _feature_matching),
  "equivariance": (_weighted("equivariance"), _equivariance),
  "keypoint_prior": (_weighted("keypoint_prior"), _keypoint_prior),
  "deformation_prior": (_weighted("deformation_prior"), _deformation_prior),
  "representation": (_weighted("representation"), _representation),
  "identity": (_weighted("identity"), _identity),
  "headpose": (_weighted("headpose"), _headpose),
  "landmark": (_weighted("landmark"), _landmark),
}


def sample_outputs(out: Mapping[str, Any]) -> dict[str, jax.Array]:
  """What the sample grid shows, from a training forward pass (``training_forward``): generated
  frames (every output size), source and driving keypoints, the occlusion map."""
  generated = out["generated"]
  result = {
    "prediction": generated["prediction"],
    "kp_source": out["source_motion"]["kp"],
    "kp_driving": out["driving_motion"]["kp"],
  }
  if "predictions" in generated:
    result["predictions"] = generated["predictions"]
  if generated.get("occlusion_map") is not None:
    result["occlusion_map"] = generated["occlusion_map"]
  return result
