"""Training: the MMFA (or face-vid2vid) objective in one jit-compiled step over a device mesh.

``Trainer(config)`` builds the networks from the config, loads the frozen ones (Hopenet, VGG19,
VGG-Face, an optional landmark network) and compiles ``train_step``, which does the generator update
and then the discriminator update on a global batch sharded along the ``data`` axis of a ``Mesh``
(states and frozen networks replicated). Everything random in a step derives from
``(train.seed, step)``, so a resumed run repeats an uninterrupted one.

The networks, the forward pass and the loss terms are in ``objective.py``; the mesh and shardings in
``sharding.py``; the loop (``train_and_evaluate``: checkpoints, metrics, evaluations, sample grids)
in ``train_loop.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mmfa_jax.checkpoints import load_pretrained
from mmfa_jax.config_checks import check_counts
from mmfa_jax.evaluators import make_evaluators
from mmfa_jax.initialization import evaluate_on_host
from mmfa_jax.models.motion import zero_head_pose
from mmfa_jax.objective import (
  LandmarkNetwork,
  Networks,
  Objective,
  required_pretrained,
  sample_outputs,
)
from mmfa_jax.ops.pyramid import image_pyramid
from mmfa_jax.sharding import batch_sharding, local_rows, make_mesh, put_replicated, replicated
from mmfa_jax.traced_steps import CachedStep, config_identity
from mmfa_jax.train_state import (
  TrainState,
  apply_gradients,
  check_prefixes,
  make_optimizer,
  step_schedule,
)

# --------------------------------------------------------------------------------------------
# Train step


def adversarial_update(
  generator: TrainState,
  discriminator: TrainState,
  generator_loss: Callable[[Any], tuple[jax.Array, dict[str, Any]]],
  discriminator_loss: Callable[[Any, dict[str, Any]], tuple[jax.Array, Any]] | None,
) -> tuple[TrainState, TrainState, dict[str, Any], dict[str, jax.Array]]:
  """One GAN step (MMFA's and the expression VAE's): the generator update, then the discriminator
  update on what the generator's loss produced.

  ``generator_loss(params) -> (loss, aux)`` with ``aux["batch_stats"]`` the generator's new
  statistics; ``discriminator_loss(params, aux) -> (loss, new statistics)``, where it detaches
  the generated samples, or ``None`` when the generator's loss does not read the discriminator:
  then it is not trained (returned as it came, no ``discriminator_gan`` fact). A side whose loss
  or gradients are not finite keeps its parameters (``apply_gradients``). Returns
  ``(generator, discriminator, aux, facts)`` with facts ``generator_loss``, ``discriminator_gan``,
  ``generator_skipped``, ``discriminator_skipped``.
  """
  (g_loss, aux), g_grads = jax.value_and_grad(generator_loss, has_aux=True)(generator.params)
  new_generator, g_skipped = apply_gradients(generator, g_grads, aux["batch_stats"], loss=g_loss)
  if discriminator_loss is None:
    facts = dict(
      generator_loss=g_loss,
      generator_skipped=g_skipped,
      discriminator_skipped=jnp.zeros_like(g_skipped),
    )
    return new_generator, discriminator, aux, facts
  d_grad_fn = jax.value_and_grad(discriminator_loss, has_aux=True)
  (d_loss, d_stats), d_grads = d_grad_fn(discriminator.params, aux)
  new_discriminator, d_skipped = apply_gradients(discriminator, d_grads, d_stats, loss=d_loss)
  facts = dict(
    generator_loss=g_loss,
    discriminator_gan=d_loss,
    generator_skipped=g_skipped,
    discriminator_skipped=d_skipped,
  )
  return new_generator, new_discriminator, aux, facts


def skipped_samples(batch: Mapping[str, jax.Array]) -> jax.Array:
  """How many samples of the batch the input pipeline replaced (unreadable videos)."""
  return jnp.sum(batch["skipped"]) if "skipped" in batch else jnp.zeros((), jnp.int32)


def train_step(
  objective: Objective,
  generator: TrainState,
  discriminator: TrainState,
  frozen: Mapping[str, Any],
  batch: Mapping[str, jax.Array],
  key: jax.Array,
) -> tuple[TrainState, TrainState, dict[str, jax.Array], dict[str, Any]]:
  """MMFA's (or face-vid2vid's) step: ``adversarial_update`` with the objective's generator loss
  and the discriminator on the (detached) new prediction against the driving frame. Without the
  GAN terms (``generator_gan`` and every ``feature_matching`` weight 0) the discriminator is not
  trained: nothing the generator learns depends on it.

  The metrics are the loss terms, the update's facts and ``skipped_samples``. The fourth output
  holds what the sample grid shows (``sample_outputs``), from this step's forward pass: the grid
  costs no second forward pass and no compilation of its own.
  """
  rng = jax.random.fold_in(key, generator.step)
  disc_variables = (discriminator.params, discriminator.batch_stats)

  def generator_loss(params: Any) -> tuple[jax.Array, dict[str, Any]]:
    return objective.generator_loss(
      params, generator.batch_stats, disc_variables, frozen, batch, rng
    )

  def discriminator_loss(params: Any, aux: dict[str, Any]) -> tuple[jax.Array, Any]:
    prediction = aux["out"]["generated"]["prediction"]
    return objective.discriminator_loss(params, aux["disc_stats"], batch["driving"], prediction)

  new_generator, new_discriminator, aux, facts = adversarial_update(
    generator,
    discriminator,
    generator_loss,
    discriminator_loss if objective.reads_discriminator else None,
  )
  metrics = {
    **aux["terms"],
    **facts,
    "skipped_samples": skipped_samples(batch),
    **motion_usage(aux["out"]["generated"]),
  }
  return new_generator, new_discriminator, metrics, sample_outputs(aux["out"])


def motion_usage(generated: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """Whether the generator moves the source at all, from one forward pass's dense motion:
  ``mask_background``, the mean weight of the background slot (slot 0, the identity warp) over
  the volume and the batch, in [0, 1], and ``occlusion``, the occlusion map's mean (when there is
  one). A background weight near 1 means the keypoints move nothing: the model copies the source
  (README, "Learning on the synthetic heads"); a uniform mask over ``K + 1`` slots gives
  ``1 / (K + 1)``."""
  usage = {"mask_background": jnp.mean(generated["mask"][..., 0].astype(jnp.float32))}
  if generated.get("occlusion_map") is not None:
    usage["occlusion"] = jnp.mean(generated["occlusion_map"].astype(jnp.float32))
  return usage


# --------------------------------------------------------------------------------------------
# Trainer: networks + optimizers + compiled functions


def tiered_compilation(config: ml_collections.ConfigDict) -> bool:
  """Whether the training step compiles quickly first (``traced_steps``, tiered compilation):
  ``config.train.tiered_compilation`` 'on', 'off' or 'auto' (the default: on where XLA compiles
  for the CPU, whose cold start is mostly LLVM's optimizations). Runs of several processes never
  do: each would switch programs at its own step."""
  choice = config.train.get("tiered_compilation", "auto")  # checked by config_checks
  if jax.process_count() > 1:
    return False
  return jax.default_backend() == "cpu" if choice == "auto" else choice == "on"


class StepRunner:
  """What ``train_and_evaluate`` drives: a mesh, two train states and a compiled step.

  Subclasses call ``_set_up`` (config, mesh, schedules) and ``_compile_step`` (their step function
  ``(generator, discriminator, step_inputs, batch, key) -> (generator, discriminator, metrics,
  outputs)``, ``outputs`` a pytree of per-sample arrays for the sample grid, possibly empty),
  provide ``step_inputs`` (the constant arrays the step reads: frozen networks) and implement
  ``init_states``, ``abstract_states`` and ``sample_grid``.
  """

  progress_metric = "generator_loss"  # shown on the progress bar
  evaluators: tuple = ()  # evaluators.Evaluator: run during training (the animation trainer's)

  def _set_up(self, config: ml_collections.ConfigDict, mesh: Mesh | None) -> None:
    check_counts(config)
    self.config = config
    self.mesh = mesh or make_mesh(config.train.num_devices)
    if config.data.batch_size % self.mesh.size:
      raise ValueError(
        f"config.data.batch_size={config.data.batch_size} is not divisible by the "
        f"{self.mesh.size} devices of the mesh"
      )
    optim = config.optim
    milestones = [round(f * config.train.num_steps) for f in optim.decay_at]
    warmup = optim.get("warmup_steps", 0)
    self.generator_schedule = step_schedule(optim.learning_rate, milestones, optim.decay, warmup)
    self.discriminator_schedule = step_schedule(
      optim.discriminator_learning_rate, milestones, optim.decay, warmup
    )
    # Made once: ``tx`` is a static field of TrainState, so every state must hold the same object
    # (a new optimizer per ``init_states`` would be a new pytree structure, retraced and recompiled).
    # optim.learning_rate_multipliers: (prefix, factor) pairs over the generator-side parameters.
    self.multipliers = tuple(
      (str(p), float(f)) for p, f in optim.get("learning_rate_multipliers", ())
    )
    self.generator_tx, self.discriminator_tx = (
      make_optimizer(
        schedule,
        b1=optim.b1,
        b2=optim.b2,
        eps=optim.get("eps", 1e-8),
        clip_norm=optim.clip_norm,
        multipliers=multipliers,
      )
      for schedule, multipliers in (
        (self.generator_schedule, self.multipliers),
        (self.discriminator_schedule, ()),
      )
    )

  def _abstract(self, make_states: Callable[[Any], Any], seed: Any) -> Any:
    """Shapes, dtypes and (replicated) shardings of ``make_states(seed)``, computing nothing."""
    shapes = jax.eval_shape(make_states, seed)
    sharding = replicated(self.mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)

  def _compile_step(self, step_fn: Callable[..., Any]) -> None:
    """``jax.jit`` of ``step_fn``: states and step inputs replicated, the batch and the per-sample
    outputs sharded on the data axis; the input states are donated. Its traced program is kept in
    the cache directory (``traced_steps.CachedStep``): a resumed run does not trace it again."""
    rep, data = replicated(self.mesh), batch_sharding(self.mesh)
    self._step = CachedStep(
      step_fn,
      in_shardings=(rep, rep, rep, data, rep),
      out_shardings=(rep, rep, rep, data),
      identity=f"{type(self).__name__}\n{dict(self.mesh.shape)}\n{config_identity(self.config)}",
      quick_first=tiered_compilation(self.config),
    )

  @property
  def compiled_step(self) -> CachedStep:
    """The step's program (``traced_steps.CachedStep``: its tier, the background optimization)."""
    return self._step

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
    self.evaluators = tuple(make_evaluators(config))
    self._compile_step(functools.partial(train_step, self.objective))
    if self.multipliers:  # their prefixes checked now (shapes only), not at the first step
      self.abstract_states()

  # -- states
  def _states(
    self, model_variables: Mapping[str, Any], disc_variables: Mapping[str, Any]
  ) -> tuple[TrainState, TrainState]:
    params, stats = model_variables["params"], model_variables.get("batch_stats", {})
    check_prefixes(params, self.multipliers)
    ema_decay = self.config.optim.get("ema_decay", 0.0)
    generator = TrainState.create(params, stats, self.generator_tx, ema_decay=ema_decay)
    discriminator = TrainState.create(
      disc_variables["params"], disc_variables.get("batch_stats", {}), self.discriminator_tx
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
    head_poses = (zero_head_pose(1), zero_head_pose(1))  # shapes only: init reads no values
    model_variables = self.networks.model.init(model_key, image, image, False, head_poses)
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
