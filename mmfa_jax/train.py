"""Training: the MMFA (or face-vid2vid) objective in one jit-compiled step over a device mesh.

``Trainer(config)`` builds the networks from the config, loads the frozen ones (Hopenet, VGG19,
VGG-Face, an optional landmark network) and compiles ``train_step``, which does the generator update
and then the discriminator update on a global batch sharded along the ``data`` axis of a ``Mesh``
(states and frozen networks replicated). ``train_and_evaluate(config, workdir)`` is the loop:
orbax checkpoints (both states and the data iterator, resumed automatically), JSONL / TensorBoard
metrics, PNG sample grids and a progress bar. Everything random in a step derives from
``(train.seed, step)``, so a resumed run repeats an uninterrupted one.

The forward pass per pair follows mmfa_delta.md 13 (MMFA) or architecture.md 9 (face-vid2vid).
Frozen networks are inputs of the step, not part of any train state: the MMFA Hopenet variables are
put into the model's variable tree at ``motion_estimator/pose`` for the forward pass only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmfa_jax import losses
from mmfa_jax.checkpoints import load_pretrained
from mmfa_jax.initialization import evaluate_on_host
from mmfa_jax.models.animation import (
  AnimationModel,
  animation_model_from_config,
  with_frozen_pose_network,
  without_frozen_pose_network,
)
from mmfa_jax.models.discriminator import MultiScaleDiscriminator
from mmfa_jax.models.hopenet import Hopenet, prepare_hopenet_input
from mmfa_jax.models.perceptual import VGG19, VGGFace
from mmfa_jax.ops.layers import sequential_running_statistics
from mmfa_jax.ops.pyramid import image_pyramid
from mmfa_jax.ops.rotation import bins_to_degrees
from mmfa_jax.ops.tps import sample_similarity_transform, sample_tps_transform, warp_image
from mmfa_jax.train_state import TrainState, apply_gradients, make_optimizer, step_schedule

DATA_AXIS = "data"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Metrics summed over a logging window (counts); every other metric is averaged.
COUNTED_METRICS = ("generator_skipped", "discriminator_skipped", "skipped_samples")


class LandmarkNetwork(Protocol):
  """A frozen, differentiable 2D landmark detector for the landmark loss (mmfa_delta 10).

  ``apply(variables, images)`` maps ``(B, H, W, 3)`` images in [0, 1] to ``(B, L, 2)`` landmarks
  in normalised (x, y) coordinates; ``point_weights`` ``(L,)`` carries the per-part factors (eyes
  and brows, mouth, the rest).
  """

  point_weights: np.ndarray

  def apply(self, variables: Any, images: jax.Array) -> jax.Array: ...


# --------------------------------------------------------------------------------------------
# Mesh and shardings


def make_mesh(num_devices: int = 0) -> Mesh:
  """A 1-D ``data`` mesh over the first ``num_devices`` devices of all processes (0: all)."""
  devices = jax.devices()
  count = num_devices or len(devices)
  if count > len(devices):
    raise ValueError(f"train.num_devices={count} but only {len(devices)} devices are visible")
  return jax.make_mesh((count,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def local_rows(array: jax.Array) -> np.ndarray:
  """This process's rows of an array sharded on the data axis (in batch order), on the host."""
  shards = {}
  for shard in array.addressable_shards:
    start = (shard.index[0].start or 0) if shard.index else 0
    shards.setdefault(start, shard)  # replicas of one row block: keep the first
  return np.concatenate([np.asarray(shards[start].data) for start in sorted(shards)], axis=0)


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same in every process) -> arrays replicated over ``mesh``.

  Unlike ``jax.device_put`` this works when the mesh spans several processes (each builds the
  shards on its own devices). PRNG key arrays are moved as their key data.
  """
  sharding = replicated(mesh)

  def put(value: Any) -> Any:
    if isinstance(value, jax.Array) and value.sharding.is_equivalent_to(sharding, value.ndim):
      return value
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(
        put(jax.random.key_data(value)), impl=jax.random.key_impl(value)
      )
    host = np.asarray(jax.device_get(value))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


# --------------------------------------------------------------------------------------------
# Variable trees


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def required_pretrained(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The frozen networks a config needs (kinds of ``config.pretrained``)."""
  kinds = []
  variant = config.model.get("variant", "mmfa")
  if variant == "mmfa" and config.model.get("pose_network", "hopenet") == "hopenet":
    kinds.append("hopenet")
  if variant == "face_vid2vid" and config.loss.headpose > 0:
    kinds.append("hopenet")
  if config.loss.perceptual_features == "vgg19":
    kinds.append("vgg19")
  elif config.loss.perceptual_features != "pixels":
    raise ValueError(
      f"config.loss.perceptual_features must be 'vgg19' or 'pixels', got "
      f"{config.loss.perceptual_features!r}"
    )
  if config.loss.vggface > 0:
    kinds.append("vggface")
  return tuple(kinds)


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
      raise ValueError(
        "config.loss.landmark > 0 needs a frozen landmark network "
        "(Trainer(config, landmarks=...)); none is configured"
      )
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

  The networks are traced once instead of N times and each kernel sees N times the batch (the
  synthetic config's compiled CPU step has 141 convolutions instead of 316; tracing and lowering
  take 9.5 s instead of 11-13 s). XLA's compile time does not change: it already compiled each
  distinct kernel once.
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
  model: AnimationModel, image: jax.Array, canonical_kp: jax.Array, train: bool
) -> dict[str, jax.Array]:
  return model.motion_estimator.frame_motion(image, canonical_kp, train)


def _generate(
  model: AnimationModel, source: jax.Array, kp_source: jax.Array, kp_driving: jax.Array
) -> dict[str, jax.Array]:
  return model.image_generator(source, kp_source, kp_driving, True)


def _expression_latent(model: AnimationModel, image: jax.Array) -> jax.Array:
  return model.motion_estimator.exp_encoder(image, True)


def training_forward(
  model: AnimationModel,
  variables: Mapping[str, Any],
  source: jax.Array,
  driving: jax.Array,
  transformed: jax.Array,
  augmented: jax.Array | None,
  with_identity: bool,
) -> tuple[dict[str, Any], Any]:
  """One training forward pass (train mode); returns ``(outputs, new batch_stats)``.

  MMFA (mmfa_delta 13): canonical keypoints of the source, of the TPS-warped driving frame and
  (for the identity loss) of the driving frame; motion of source and driving on the source's
  canonical keypoints and of the warped frame on its **own** (equivariance); generated frames; the
  expression latent of the augmented driving frame. face-vid2vid (architecture.md 9): canonical
  keypoints of the source only; every motion on them, as the reference.

  Repeated calls of one network (canonical keypoints of up to three frames, the motion of three)
  run batched (``_motion_of_each``); BatchNorm's running statistics are updated as if the calls
  ran one after another in the order listed here.
  """
  mmfa = model.variant == "mmfa"
  if mmfa:
    frames = [source, transformed] + ([driving] if with_identity else [])
    canonical, stats = _motion_of_each(model, variables, _canonical_keypoints, jnp.stack(frames))
  else:  # one call: no batching needed
    one, updated = model.apply(
      variables, source, True, method=_canonical_keypoints, mutable=["batch_stats"]
    )
    canonical, stats = one[None], updated["batch_stats"]
  canonical_kp = canonical[0]  # (B, K, 3)
  transformed_canonical = canonical[1] if mmfa else canonical_kp
  variables = {**variables, "batch_stats": stats}
  motions, stats = _motion_of_each(
    model,
    variables,
    _frame_motion,
    jnp.stack([source, driving, transformed]),  # (3, B, H, W, 3)
    jnp.stack([canonical_kp, canonical_kp, transformed_canonical]),  # (3, B, K, 3)
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
  if mmfa and with_identity:
    out["driving_canonical_kp"] = canonical[2]
  if mmfa and augmented is not None:
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
    self.variant = config.model.get("variant", "mmfa")
    self.disc_scales = tuple(float(s) for s in config.model.discriminator.scales)

  # -- frozen feature extractors
  def _perceptual_features(self, frozen: Mapping[str, Any]) -> tuple[Callable, tuple[float, ...]]:
    weights = tuple(self.loss.perceptual_layer_weights)
    if self.loss.perceptual_features == "pixels":
      return (lambda images: [images]), weights[:1]
    vgg19, variables = self.nets.vgg19, frozen["vgg19"]
    return (lambda images: _float32(vgg19.apply(variables, images))), weights

  def model_variables(self, params: Any, batch_stats: Any, frozen: Mapping[str, Any]) -> dict:
    """The model's full variable tree: trained variables plus a frozen MMFA Hopenet."""
    if self.variant == "mmfa" and "hopenet" in frozen:
      return with_frozen_pose_network(
        {"params": params, "batch_stats": batch_stats}, frozen["hopenet"]
      )
    return {"params": params, "batch_stats": batch_stats}

  def trained_part(self, variables: Mapping[str, Any]) -> tuple[Any, Any]:
    """(params, batch_stats) of a full model variable tree, less the frozen MMFA Hopenet."""
    if self.variant == "mmfa" and self.config.model.get("pose_network", "hopenet") == "hopenet":
      variables = without_frozen_pose_network(variables)
    return variables["params"], variables.get("batch_stats", {})

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
    if self.variant == "mmfa" and loss.representation > 0:
      similarity = dict(loss.similarity)
      similarity["scale_range"] = tuple(similarity["scale_range"])
      augmented = warp_image(
        sample_similarity_transform(similarity_rng, batch_size, **similarity), driving
      )
    with_identity = self.variant == "mmfa" and loss.identity > 0
    out, updated_stats = training_forward(
      self.nets.model,
      self.model_variables(params, batch_stats, frozen),
      source,
      driving,
      transformed,
      augmented,
      with_identity,
    )
    out = _float32(out)
    _, new_stats = self.trained_part({"params": params, "batch_stats": updated_stats})
    generated = out["generated"]
    prediction = generated["prediction"]
    driving_motion = out["driving_motion"]
    terms = {}

    features, layer_weights = self._perceptual_features(frozen)
    if "predictions" in generated:
      terms["perceptual"] = losses.multiscale_perceptual(
        features,
        generated["predictions"],
        driving,
        layer_weights,
        min_size=loss.perceptual_min_size,
      )
    else:
      terms["perceptual"] = losses.perceptual_pyramid(
        features, prediction, driving, tuple(self.config.perceptual_scales), layer_weights
      )
    if loss.vggface > 0:
      vggface, variables = self.nets.vggface, frozen["vggface"]
      terms["vggface"] = losses.vggface_perceptual(
        lambda images: _float32(vggface.apply(variables, images)),
        prediction,
        driving,
        loss.vggface,
      )

    disc_params, disc_stats = disc_variables
    if loss.generator_gan > 0 or any(w > 0 for w in loss.feature_matching):
      fake, disc_stats = self.discriminate(disc_params, disc_stats, prediction)
      real, disc_stats = self.discriminate(disc_params, disc_stats, driving)
      scales = sorted(fake)
      terms["generator_gan"] = loss.generator_gan * losses.generator_gan(
        [fake[s][1] for s in scales], loss.gan_mode
      )
      terms["feature_matching"] = sum(
        losses.feature_matching(real[s][0], fake[s][0], tuple(loss.feature_matching))
        for s in scales
      )

    if loss.equivariance > 0:
      terms["equivariance"] = loss.equivariance * losses.equivariance(
        driving_motion["kp"], out["transformed_motion"]["kp"], transform
      )
    if loss.keypoint_prior > 0:
      terms["keypoint_prior"] = loss.keypoint_prior * losses.keypoint_prior(
        driving_motion["kp"], loss.keypoint_distance, loss.keypoint_depth
      )
    if loss.deformation_prior > 0:
      terms["deformation_prior"] = loss.deformation_prior * losses.deformation_prior(
        driving_motion["expression_deformation"]
      )
    if "augmented_latent" in out:
      terms["representation"] = loss.representation * losses.representation(
        driving_motion["expression_latent"], out["augmented_latent"]
      )
    if "driving_canonical_kp" in out:
      terms["identity"] = loss.identity * losses.identity_consistency(
        out["source_motion"]["canonical_kp"], out["driving_canonical_kp"]
      )
    if self.variant == "face_vid2vid" and loss.headpose > 0:
      logits = self.nets.hopenet.apply(frozen["hopenet"], prepare_hopenet_input(driving))
      target = {k: bins_to_degrees(v.astype(jnp.float32)) for k, v in logits.items()}
      terms["headpose"] = loss.headpose * losses.headpose(driving_motion, target)
    if loss.landmark > 0:
      detector = self.nets.landmarks
      terms["landmark"] = loss.landmark * losses.landmark(
        detector.apply(frozen["landmarks"], prediction),
        detector.apply(frozen["landmarks"], driving),
        jnp.asarray(detector.point_weights, jnp.float32),
      )
    total = sum(terms.values())
    return total, dict(terms=terms, batch_stats=new_stats, disc_stats=disc_stats, out=out)

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


# --------------------------------------------------------------------------------------------
# Train step


def train_step(
  objective: Objective,
  generator: TrainState,
  discriminator: TrainState,
  frozen: Mapping[str, Any],
  batch: Mapping[str, jax.Array],
  key: jax.Array,
) -> tuple[TrainState, TrainState, dict[str, jax.Array], dict[str, Any]]:
  """Generator update, then discriminator update on the (detached) new prediction.

  A side whose loss or gradients are not finite keeps its parameters (``apply_gradients``); the
  metrics say so (``generator_skipped``, ``discriminator_skipped``). The fourth output holds what
  the sample grid shows (``sample_outputs``), from this step's forward pass: the grid costs no
  second forward pass and no compilation of its own.
  """
  rng = jax.random.fold_in(key, generator.step)
  grad_fn = jax.value_and_grad(objective.generator_loss, has_aux=True)
  (g_loss, aux), g_grads = grad_fn(
    generator.params,
    generator.batch_stats,
    (discriminator.params, discriminator.batch_stats),
    frozen,
    batch,
    rng,
  )
  new_generator, g_skipped = apply_gradients(generator, g_grads, aux["batch_stats"], loss=g_loss)

  prediction = aux["out"]["generated"]["prediction"]
  d_grad_fn = jax.value_and_grad(objective.discriminator_loss, has_aux=True)
  (d_loss, d_stats), d_grads = d_grad_fn(
    discriminator.params, aux["disc_stats"], batch["driving"], prediction
  )
  new_discriminator, d_skipped = apply_gradients(discriminator, d_grads, d_stats, loss=d_loss)

  metrics = dict(aux["terms"])
  metrics.update(
    generator_loss=g_loss,
    discriminator_gan=d_loss,
    generator_skipped=g_skipped,
    discriminator_skipped=d_skipped,
    skipped_samples=jnp.sum(batch["skipped"]) if "skipped" in batch else jnp.zeros((), jnp.int32),
  )
  return new_generator, new_discriminator, metrics, sample_outputs(aux["out"])


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


# --------------------------------------------------------------------------------------------
# Trainer: networks + optimizers + compiled functions


class StepRunner:
  """What ``train_and_evaluate`` drives: a mesh, two train states and a compiled step.

  Subclasses call ``_set_up`` (config, mesh, schedules) and ``_compile_step`` (their step function
  ``(generator, discriminator, step_inputs, batch, key) -> (generator, discriminator, metrics,
  outputs)``, ``outputs`` a pytree of per-sample arrays for the sample grid, possibly empty),
  provide ``step_inputs`` (the constant arrays the step reads: frozen networks) and implement
  ``init_states``, ``abstract_states`` and ``sample_grid``.
  """

  progress_metric = "generator_loss"  # shown on the progress bar

  def _set_up(self, config: ml_collections.ConfigDict, mesh: Mesh | None) -> None:
    self.config = config
    self.mesh = mesh or make_mesh(config.train.num_devices)
    if config.data.batch_size % self.mesh.size:
      raise ValueError(
        f"config.data.batch_size={config.data.batch_size} is not divisible by the "
        f"{self.mesh.size} devices of the mesh"
      )
    optim = config.optim
    milestones = [round(f * config.train.num_steps) for f in optim.decay_at]
    self.generator_schedule = step_schedule(optim.learning_rate, milestones, optim.decay)
    self.discriminator_schedule = step_schedule(
      optim.discriminator_learning_rate, milestones, optim.decay
    )

  def _optimizer(self, params: Any, schedule: Any) -> Any:
    optim = self.config.optim
    return make_optimizer(
      params,
      schedule,
      b1=optim.b1,
      b2=optim.b2,
      eps=optim.get("eps", 1e-8),
      clip_norm=optim.clip_norm,
      frozen_prefixes=(),
    )

  def _abstract(self, make_states: Callable[[Any], Any], seed: Any) -> Any:
    """Shapes, dtypes and (replicated) shardings of ``make_states(seed)``, computing nothing."""
    shapes = jax.eval_shape(make_states, seed)
    sharding = replicated(self.mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)

  def _compile_step(self, step_fn: Callable[..., Any]) -> None:
    """``jax.jit`` of ``step_fn``: states and step inputs replicated, the batch and the per-sample
    outputs sharded on the data axis; the input states are donated."""
    rep, data = replicated(self.mesh), batch_sharding(self.mesh)
    self._step = jax.jit(
      step_fn,
      in_shardings=(rep, rep, rep, data, rep),
      out_shardings=(rep, rep, rep, data),
      donate_argnums=(0, 1),
    )

  @property
  def step_inputs(self) -> Any:
    raise NotImplementedError(f"{type(self).__name__} must define step_inputs")

  def step(
    self,
    generator: TrainState,
    discriminator: TrainState,
    batch: Mapping[str, jax.Array],
    key: jax.Array,
  ) -> tuple[TrainState, TrainState, dict[str, jax.Array], Any]:
    """One compiled training step (the input states are donated); returns the new states, the
    metrics and the sample-grid outputs."""
    return self._step(generator, discriminator, self.step_inputs, batch, key)

  def global_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded on the mesh's data axis."""
    sharding = batch_sharding(self.mesh)
    return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
      for k, v in local_batch.items()
    }

  def learning_rates(self, step: int) -> dict[str, float]:
    return {
      "learning_rate": float(self.generator_schedule(step)),
      "discriminator_learning_rate": float(self.discriminator_schedule(step)),
    }


class Trainer(StepRunner):
  """Networks, frozen variables, optimizers and the compiled step of one config on one mesh.

  Args:
    config: an experiment config (``configs/vox.py`` layout).
    mesh: device mesh (default ``make_mesh(config.train.num_devices)``).
    frozen: frozen variables ``{kind: variables}``; default ``load_pretrained`` of the kinds
      ``required_pretrained(config)`` names (checked before anything is compiled).
    landmarks: a ``LandmarkNetwork`` (with ``frozen['landmarks']``) for the landmark loss.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    mesh: Mesh | None = None,
    frozen: Mapping[str, Any] | None = None,
    landmarks: LandmarkNetwork | None = None,
  ):
    self._set_up(config, mesh)
    self.networks = Networks.from_config(config, landmarks)
    self.objective = Objective(config, self.networks)
    if frozen is None:
      frozen = load_pretrained(config.pretrained, required_pretrained(config))
    missing = [k for k in required_pretrained(config) if k not in frozen]
    if config.loss.landmark > 0 and "landmarks" not in frozen:
      missing.append("landmarks")
    if missing:
      raise ValueError(f"frozen variables missing for {missing}")
    self.frozen = put_replicated(dict(frozen), self.mesh)
    self._compile_step(functools.partial(train_step, self.objective))

  # -- states
  def _states(
    self, model_variables: Mapping[str, Any], disc_variables: Mapping[str, Any]
  ) -> tuple[TrainState, TrainState]:
    params, stats = self.objective.trained_part(model_variables)
    generator = TrainState.create(params, stats, self._optimizer(params, self.generator_schedule))
    discriminator = TrainState.create(
      disc_variables["params"],
      disc_variables.get("batch_stats", {}),
      self._optimizer(disc_variables["params"], self.discriminator_schedule),
    )
    return generator, discriminator

  def states_from_variables(
    self, model_variables: Mapping[str, Any], disc_variables: Mapping[str, Any]
  ) -> tuple[TrainState, TrainState]:
    """Fresh train states (step 0, new optimizer state) from full variable trees."""
    return put_replicated(self._states(model_variables, disc_variables), self.mesh)

  def _initial_states(self, seed: jax.Array) -> tuple[TrainState, TrainState]:
    """Fresh train states of a seed (traceable: evaluated on the host by ``init_states``)."""
    size = self.config.image_size
    image = jnp.zeros((1, size, size, self.config.image_channels), jnp.float32)
    model_key, disc_key = jax.random.split(jax.random.key(seed))
    model_variables = self.networks.model.init(model_key, image, image)
    pyramid = image_pyramid(image, self.objective.disc_scales)
    return self._states(model_variables, self.networks.discriminator.init(disc_key, pyramid))

  def init_states(self, seed: int | None = None) -> tuple[TrainState, TrainState]:
    """Random initial states, replicated on the mesh; nothing is compiled
    (``initialization.evaluate_on_host``: the initialisers alone, evaluated with NumPy)."""
    seed = self.config.train.seed if seed is None else seed
    return put_replicated(evaluate_on_host(self._initial_states, np.int32(seed)), self.mesh)

  def abstract_states(self) -> tuple[TrainState, TrainState]:
    """Shapes, dtypes and shardings of the states (restore targets), without computing them."""
    return self._abstract(self._initial_states, np.int32(0))

  def model_variables(self, generator: TrainState) -> dict[str, Any]:
    """The full model variable tree (frozen Hopenet included) of a generator state."""
    return self.objective.model_variables(generator.params, generator.batch_stats, self.frozen)

  # -- compiled functions
  @property
  def step_inputs(self) -> dict[str, Any]:
    """The frozen networks' variables (replicated)."""
    return self.frozen

  def sample_grid(
    self, outputs: Mapping[str, jax.Array], local_batch: Mapping[str, np.ndarray]
  ) -> np.ndarray:
    """The sample grid of a step (uint8 ``(H, W, 3)``): source and driving with keypoints drawn,
    the generated frame at each size, the occlusion map; this process's rows of the batch."""
    from mmfa_jax.visualize import sample_grid, training_columns

    shown = {k: np.asarray(v) for k, v in local_batch.items()}
    return sample_grid(training_columns(shown, jax.tree.map(local_rows, outputs)))


# --------------------------------------------------------------------------------------------
# Logs


def _summary_writer_class() -> type | None:
  """tensorboardX's ``SummaryWriter``, else torch's when ``tensorboard`` is installed, else None.

  Looks before importing: torch's writer needs the ``tensorboard`` package, and importing torch
  only to find it missing cost 1.5-2.3 s of every run's start-up."""
  import importlib.util

  if importlib.util.find_spec("tensorboardX") is not None:
    from tensorboardX import SummaryWriter

    return SummaryWriter
  if importlib.util.find_spec("tensorboard") is not None and importlib.util.find_spec("torch"):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter
  return None


class MetricWriter:
  """Scalars to ``WORKDIR/metrics.jsonl`` (one JSON object per line), the console and, when
  ``tensorboardX`` (or torch with ``tensorboard``) is installed, TensorBoard event files in
  ``WORKDIR/tensorboard``. Only process 0 writes (the others' writers are no-ops)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    SummaryWriter = _summary_writer_class()
    if SummaryWriter is None:
      logging.info("TensorBoard writer not installed (pip install tensorboardX); JSONL only")
    else:
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as handle:
      handle.write(json.dumps(record) + "\n")
    logging.info(
      "step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
    )
    if self._tensorboard is not None:
      for key, value in scalars.items():
        self._tensorboard.add_scalar(key, float(value), int(step))
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict[str, float]]:
  """The records of ``WORKDIR/metrics.jsonl``, in order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as handle:
    return [json.loads(line) for line in handle if line.strip()]


# --------------------------------------------------------------------------------------------
# The loop


def make_train_iterator(config: ml_collections.ConfigDict, seed: int) -> Any:
  """This process's batch iterator (checkpointable grain iterator) for ``config.data``."""
  from mmfa_jax.data.pipeline import make_source, train_dataset

  data = config.data
  dataset = train_dataset(
    make_source(data),
    image_size=config.image_size,
    batch_size=data.batch_size,
    seed=seed,
    augment=data.augment,
    worker_count=data.get("worker_count", 0),
    read_threads=data.get("read_threads", 16),
    prefetch=data.get("prefetch", 500),
  )
  return iter(dataset)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """``WORKDIR/config.json`` (what the run was, for animation and for people)."""
  path = os.path.join(workdir, "config.json")
  with open(f"{path}.tmp", "w") as handle:
    handle.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(f"{path}.tmp", path)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  trainer: StepRunner | None = None,
) -> tuple[TrainState, TrainState]:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint; returns the states.

  Writes ``checkpoints/``, ``metrics.jsonl`` (every ``train.log_every`` steps), ``samples/*.png``
  (every ``train.sample_every`` steps) and ``config.json``. The first record of each run (or
  resumption) also holds its start-up: ``startup_seconds`` (process start to the first finished
  step), ``compiled_programs`` and ``compile_seconds`` (what XLA compiled until then),
  ``cached_programs`` and ``cache_load_seconds`` (what the compilation cache provided instead).
  """
  from mmfa_jax.checkpoints import TrainingCheckpoints
  from mmfa_jax.compilation_cache import CompileCounter, seconds_since_process_start
  from mmfa_jax.visualize import save_png

  compiles = CompileCounter().start()
  train = config.train
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    save_config(config, workdir)
  trainer = trainer or Trainer(config)
  checkpoints = TrainingCheckpoints(
    os.path.join(workdir, "checkpoints"), train.keep_checkpoints, train.async_checkpoints
  )
  iterator = make_train_iterator(config, train.seed)
  latest = checkpoints.latest_step()
  if latest is None:
    generator, discriminator = trainer.init_states()
    start = 0
  else:
    generator, discriminator = checkpoints.restore(latest, *trainer.abstract_states(), iterator)
    start = int(generator.step)
    logging.info("resumed from %s at step %d", checkpoints.directory, start)
  key = put_replicated(jax.random.key(train.seed + 1), trainer.mesh)
  end = train.num_steps
  if train.get("stop_after_steps"):
    end = min(end, start + train.stop_after_steps)
  writer = MetricWriter(workdir, enabled=is_main)
  progress = None
  if is_main and train.progress_bar and start < end:
    from tqdm import tqdm

    progress = tqdm(total=end, initial=start, desc="train", unit="step", dynamic_ncols=True)

  window, window_steps, window_start = None, 0, time.perf_counter()
  totals = {name: 0 for name in COUNTED_METRICS}
  startup = None  # start-up facts, logged with the first record
  step = start
  try:
    while step < end:
      local = next(iterator)
      batch = trainer.global_batch(local)
      generator, discriminator, metrics, outputs = trainer.step(
        generator, discriminator, batch, key
      )
      # Accumulated on the device, fetched only when logging (no per-step host sync).
      window = metrics if window is None else jax.tree.map(jnp.add, window, metrics)
      window_steps += 1
      step += 1
      if startup is None:
        jax.block_until_ready(metrics)
        compiles.stop()
        startup = dict(
          startup_seconds=seconds_since_process_start() or float("nan"),
          compiled_programs=compiles.compiled,
          compile_seconds=compiles.compile_seconds,
          cached_programs=compiles.loaded,
          cache_load_seconds=compiles.load_seconds,
        )
        logging.info(
          "first step finished %.1f s after the process started; %s",
          startup["startup_seconds"],
          compiles.summary(),
        )
      if progress is not None:
        progress.update(1)
      if step % train.log_every == 0 or step == end:
        values = jax.device_get(window)
        elapsed = time.perf_counter() - window_start
        scalars = {
          k: float(v) if k in COUNTED_METRICS else float(v) / window_steps
          for k, v in values.items()
        }
        for name in COUNTED_METRICS:
          totals[name] += int(values[name])
          scalars[f"total_{name}"] = totals[name]
        scalars.update(trainer.learning_rates(step - 1))
        scalars["images_per_second"] = window_steps * config.data.batch_size / elapsed
        scalars.update(startup)
        startup = {}
        writer.write(step, scalars)
        if progress is not None:
          progress.set_postfix(loss=f"{scalars[trainer.progress_metric]:.3f}")
        window, window_steps, window_start = None, 0, time.perf_counter()
      if train.sample_every and (step % train.sample_every == 0 or step == end):
        grid = trainer.sample_grid(outputs, local)
        if is_main and grid is not None:
          save_png(os.path.join(workdir, "samples", f"step_{step:07d}.png"), grid)
      if step % train.checkpoint_every == 0 or step == end:
        checkpoints.save(step, generator, discriminator, iterator)
  finally:
    if startup is None:
      compiles.stop()
    checkpoints.close()
    writer.close()
    if progress is not None:
      progress.close()
  return generator, discriminator
