"""Expression VAE training (mmfa_delta.md 14), run after MMFA from its frozen expression encoder.

``VAETrainer(config)`` reads the MMFA run named by ``config.mmfa.workdir`` (its ``config.json`` and
latest checkpoint), and compiles one step that

1. computes the expression features ``f_exp = E_exp(frame)`` ``(2B, feature_dim)`` of the source and
   driving frames of a batch with the frozen encoder (eval-mode BatchNorm) and folds them into the
   VAE's running feature mean and variance (``ExpressionVAE.update_feature_stats``),
2. updates the VAE on ``rec * MSE(f, f_hat) + kl_weight(step) * KL(q || N(0, I)) + adv * L_adv``
   on standardised features ``f``, with the KL weight annealed linearly from 0 over the first
   ``kl_anneal`` fraction of the steps and ``L_adv`` the least-squares generator loss of the latent
   discriminator on prior decodes ``Dec(z), z ~ N(0, I)`` and reconstructions ``f_hat``,
3. updates the discriminator (real ``f``; fake prior decodes and reconstructions, detached).

The trainer has the interface ``train.train_and_evaluate`` drives (states, checkpoints, logs), so
``python -m mmfa_jax.main --config=configs/vox_vae.py --workdir=DIR`` runs it like MMFA. Besides the
loss terms it logs ``kl_per_dim`` and ``prior_spread``: the standard deviation of prior decodes over
that of the real features (about 1 when the samples are as diverse as real expressions, near 0 when
the VAE has collapsed to the mean expression).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmfa_jax import losses
from mmfa_jax.checkpoints import load_training_run
from mmfa_jax.initialization import evaluate_on_host
from mmfa_jax.models.animation import animation_model_from_config
from mmfa_jax.models.expression_vae import ExpressionVAE, LatentDiscriminator
from mmfa_jax.models.variants import variant_from_config
from mmfa_jax.sharding import put_replicated
from mmfa_jax.train import StepRunner, adversarial_update, skipped_samples
from mmfa_jax.train_state import TrainState


def _expression_features(model: Any, frames: jax.Array) -> jax.Array:
  """``model.apply(..., method=_expression_features)``: ``(N, H, W, 3)`` -> ``(N, feature_dim)``."""
  return model.motion_estimator.exp_encoder(frames, False)


def _spread(features: jax.Array) -> jax.Array:
  """Mean over feature dimensions of the standard deviation over the batch."""
  return jnp.mean(jnp.std(features, axis=0))


class VAETrainer(StepRunner):
  """The expression VAE and its latent discriminator on top of a frozen MMFA expression encoder.

  Args:
    config: a ``configs/vox_vae.py`` config. ``config.image_size`` is set from the MMFA run.
    mesh: device mesh (default ``make_mesh(config.train.num_devices)``).
    encoder_variables: the MMFA model's variables (default: read from ``config.mmfa.workdir``).
    mmfa_model_config: the MMFA run's ``model`` config section (given with ``encoder_variables``).
  """

  progress_metric = "vae_loss"

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    mesh: Any = None,
    *,
    encoder_variables: Mapping[str, Any] | None = None,
    mmfa_model_config: ml_collections.ConfigDict | None = None,
  ):
    self._set_up(config, mesh)
    if encoder_variables is None:
      if not config.mmfa.get("workdir"):
        raise ValueError(
          "config.mmfa.workdir is not set: pass the workdir of a trained MMFA run "
          "(--config.mmfa.workdir=DIR)"
        )
      run_config, encoder_variables, step = load_training_run(
        config.mmfa.workdir, config.mmfa.get("step")
      )
      variant = variant_from_config(run_config.model)
      if not variant.has_expression_latent:
        raise ValueError(
          f"{config.mmfa.workdir} is a {variant.name} run; the expression VAE needs an MMFA run "
          "(it encodes MMFA's expression features)"
        )
      logging.info("expression encoder of %s at step %d", config.mmfa.workdir, step)
      mmfa_model_config = run_config.model
      with config.unlocked():
        config.image_size = run_config.image_size
        # Saved in the run's config.json: absolute, so the run loads from any directory.
        config.mmfa.workdir = os.path.abspath(config.mmfa.workdir)
    self.model = animation_model_from_config(mmfa_model_config)
    self.encoder_variables = put_replicated(
      {k: encoder_variables[k] for k in ("params", "batch_stats")}, self.mesh
    )
    feature_dim = mmfa_model_config.expression_encoder.latent_dim
    vae = config.expression_vae
    self.vae = ExpressionVAE(
      feature_dim=feature_dim, latent_dim=vae.latent_dim, hidden=tuple(vae.hidden)
    )
    self.discriminator = LatentDiscriminator(hidden=tuple(config.latent_discriminator.hidden))
    self._compile_step(self._train_step)

  # -- states
  def _states(self, seed: jax.Array) -> tuple[TrainState, TrainState]:
    """Fresh train states of a seed (traceable: evaluated on the host by ``init_states``)."""
    vae_key, sample_key, disc_key = jax.random.split(jax.random.key(seed), 3)
    features = jnp.zeros((1, self.vae.feature_dim), jnp.float32)
    vae_variables = self.vae.init(vae_key, features, sample_key)
    disc_variables = self.discriminator.init(disc_key, features)

    def state(variables: Any, tx: Any) -> TrainState:
      return TrainState.create(variables["params"], variables.get("batch_stats", {}), tx)

    return state(vae_variables, self.generator_tx), state(disc_variables, self.discriminator_tx)

  def init_states(self, seed: int | None = None) -> tuple[TrainState, TrainState]:
    """Random initial states, replicated on the mesh, compiling nothing (``evaluate_on_host``)."""
    seed = self.config.train.seed if seed is None else seed
    return put_replicated(evaluate_on_host(self._states, np.int32(seed)), self.mesh)

  def abstract_states(self) -> tuple[TrainState, TrainState]:
    return self._abstract(self._states, np.int32(0))

  # -- the step
  def kl_weight(self, step: jax.Array) -> jax.Array:
    """``loss.kl`` times ``min(1, step / (kl_anneal * num_steps))``."""
    loss = self.config.vae_loss
    anneal_steps = loss.kl_anneal * self.config.train.num_steps
    if anneal_steps <= 0:
      return jnp.asarray(loss.kl, jnp.float32)
    return loss.kl * jnp.minimum(1.0, step.astype(jnp.float32) / anneal_steps)

  def _discriminate(self, state_params: Any, stats: Any, features: jax.Array) -> tuple[Any, Any]:
    scores, updated = self.discriminator.apply(
      {"params": state_params, "batch_stats": stats}, features, True, mutable=["batch_stats"]
    )
    return scores, updated["batch_stats"]

  def _vae_loss(
    self,
    params: Any,
    feature_stats: Any,
    discriminator: TrainState,
    features: jax.Array,
    rng: jax.Array,
    kl_weight: jax.Array,
  ) -> tuple[jax.Array, dict[str, Any]]:
    loss = self.config.vae_loss
    variables = {"params": params, "batch_stats": feature_stats}
    posterior_rng, prior_rng = jax.random.split(rng)
    out = self.vae.apply(variables, features, posterior_rng)
    real = out["standardized_features"]  # (N, feature_dim)
    prior = jax.random.normal(prior_rng, (features.shape[0], self.vae.latent_dim))
    decoded = self.vae.apply(variables, prior, True, method=ExpressionVAE.decode)  # standardised
    fake = jnp.concatenate(
      [decoded, out["standardized_reconstruction"]], axis=0
    )  # (2N, feature_dim)
    scores, disc_stats = self._discriminate(discriminator.params, discriminator.batch_stats, fake)
    kl = losses.kl_divergence(out["mean"], out["log_var"])
    terms = {
      "reconstruction": loss.reconstruction
      * losses.reconstruction_mse(out["standardized_reconstruction"], real),
      "kl": kl_weight * kl,
      "adversarial": loss.adversarial * losses.generator_gan([scores], "ls"),
    }
    aux = dict(
      terms=terms,
      kl_unweighted=kl,
      disc_stats=disc_stats,
      real=real,
      fake=fake,
      prior_spread=_spread(decoded) / (_spread(real) + 1e-8),
    )
    return sum(terms.values()), aux

  def _disc_loss(
    self, params: Any, stats: Any, real: jax.Array, fake: jax.Array
  ) -> tuple[jax.Array, Any]:
    real_scores, stats = self._discriminate(params, stats, real)
    fake_scores, stats = self._discriminate(params, stats, jax.lax.stop_gradient(fake))
    half = fake.shape[0] // 2  # prior decodes and reconstructions, each against the real batch
    value = 0.5 * (
      losses.discriminator_gan([real_scores], [fake_scores[:half]], "ls")
      + losses.discriminator_gan([real_scores], [fake_scores[half:]], "ls")
    )
    return value, stats

  def _train_step(
    self,
    vae: TrainState,
    discriminator: TrainState,
    encoder_variables: Any,
    batch: Mapping[str, jax.Array],
    key: jax.Array,
  ) -> tuple[TrainState, TrainState, dict[str, jax.Array], dict]:
    frames = jnp.concatenate([batch["source"], batch["driving"]], axis=0)  # (2B, H, W, 3)
    features = self.model.apply(encoder_variables, frames, method=_expression_features)
    features = jax.lax.stop_gradient(features.astype(jnp.float32))  # (2B, feature_dim)
    _, updated = self.vae.apply(
      {"params": vae.params, "batch_stats": vae.batch_stats},
      features,
      method=ExpressionVAE.update_feature_stats,
      mutable=["batch_stats"],
    )
    feature_stats = updated["batch_stats"]
    rng = jax.random.fold_in(key, vae.step)
    kl_weight = self.kl_weight(vae.step)

    def vae_loss(params: Any) -> tuple[jax.Array, dict[str, Any]]:
      value, aux = self._vae_loss(params, feature_stats, discriminator, features, rng, kl_weight)
      return value, {**aux, "batch_stats": feature_stats}  # the VAE's statistics: features'

    def disc_loss(params: Any, aux: dict[str, Any]) -> tuple[jax.Array, Any]:
      return self._disc_loss(params, aux["disc_stats"], aux["real"], aux["fake"])

    new_vae, new_discriminator, aux, facts = adversarial_update(
      vae, discriminator, vae_loss, disc_loss
    )
    metrics = dict(aux["terms"])
    metrics.update(
      vae_loss=facts["generator_loss"],
      discriminator_gan=facts["discriminator_gan"],
      kl_weight=kl_weight,
      kl_per_dim=aux["kl_unweighted"] / self.vae.latent_dim,
      prior_spread=aux["prior_spread"],
      feature_spread=_spread(features),
      generator_skipped=facts["generator_skipped"],
      discriminator_skipped=facts["discriminator_skipped"],
      skipped_samples=skipped_samples(batch),
    )
    return new_vae, new_discriminator, metrics, {}  # no sample-grid outputs

  # -- what train_and_evaluate calls
  @property
  def step_inputs(self) -> dict[str, Any]:
    """The frozen MMFA model's variables (replicated)."""
    return self.encoder_variables

  def sample_grid(self, outputs: Any, local_batch: Any) -> None:
    """No image grid for the VAE (its samples are rendered by the animate/edit tools)."""
    return None
