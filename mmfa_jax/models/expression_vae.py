"""Expression VAE and its latent-feature discriminator (mmfa_delta.md 14).

The VAE maps a frozen expression feature ``f_exp`` ``(B, 128)`` to a Gaussian ``q(z | f_exp)``
(``mean``, ``log_var`` ``(B, 32)``), samples ``z = mean + exp(log_var / 2) * eps`` and decodes back
to ``(B, 128)``. It works on standardised features ``(f_exp - mu) / sigma``, with the per-dimension
mean and variance of the training features kept in its ``batch_stats`` collection (exact running
statistics over every feature seen, updated by ``update_feature_stats``): the encoder's features are
small (spread ~1e-2 after training), and unscaled they make the KL term dominate and collapse the
posterior. ``encode`` takes and ``decode`` returns raw features, so callers never see the scaling. The discriminator (MLP with spectral norm) scores 128-d feature vectors for the
least-squares adversarial term that keeps decoded samples from collapsing to the mean expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfa_jax.ops.layers import Dense

Dtype = Any


class _MLP(nn.Module):
  """Dense layers ``hidden_{i}`` with LeakyReLU 0.2 between them; no activation after ``out``."""

  hidden: Sequence[int]
  out_features: int
  spectral_norm: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, width in enumerate(self.hidden):
      x = Dense(width, spectral_norm=self.spectral_norm, dtype=self.dtype, name=f"hidden_{i}")(
        x, train
      )
      x = nn.leaky_relu(x, 0.2)
    return Dense(self.out_features, spectral_norm=self.spectral_norm, dtype=self.dtype, name="out")(
      x, train
    )


class ExpressionVAE(nn.Module):
  """``encoder`` MLP (-> 2 * latent: mean, log-variance) and ``decoder`` MLP (latent -> feature)."""

  feature_dim: int = 128
  latent_dim: int = 32
  hidden: Sequence[int] = (256, 256)
  dtype: Dtype | None = None

  eps: float = 1e-8  # added to the feature variance before the square root

  def setup(self) -> None:
    self.encoder = _MLP(self.hidden, 2 * self.latent_dim, dtype=self.dtype)
    self.decoder = _MLP(self.hidden, self.feature_dim, dtype=self.dtype)
    shape = (self.feature_dim,)
    self.feature_mean = self.variable("batch_stats", "feature_mean", jnp.zeros, shape, jnp.float32)
    self.feature_var = self.variable("batch_stats", "feature_var", jnp.ones, shape, jnp.float32)
    self.feature_count = self.variable("batch_stats", "feature_count", jnp.zeros, (), jnp.float32)

  def standardize(self, features: jax.Array) -> jax.Array:
    """Raw ``(B, feature_dim)`` features -> ``(f - mean) / sqrt(var + eps)``."""
    return (features - self.feature_mean.value) * jax.lax.rsqrt(self.feature_var.value + self.eps)

  def destandardize(self, standardized: jax.Array) -> jax.Array:
    """Inverse of ``standardize``."""
    return standardized * jnp.sqrt(self.feature_var.value + self.eps) + self.feature_mean.value

  def update_feature_stats(self, features: jax.Array) -> None:
    """Folds a batch ``(B, feature_dim)`` into the running mean and variance (Chan et al.'s exact
    pairwise update: after any sequence of batches they equal the statistics of all of them)."""
    features = features.astype(jnp.float32)
    count, mean, var = self.feature_count.value, self.feature_mean.value, self.feature_var.value
    count = jnp.where(count > 0, count, 0.0)  # the initial variance of 1 carries no weight
    batch_count = jnp.asarray(features.shape[0], jnp.float32)
    batch_mean = jnp.mean(features, axis=0)  # (feature_dim,)
    batch_var = jnp.var(features, axis=0)  # (feature_dim,)
    total = count + batch_count
    delta = batch_mean - mean
    new_mean = mean + delta * batch_count / total
    m2 = var * count + batch_var * batch_count + delta**2 * count * batch_count / total
    self.feature_mean.value = new_mean
    self.feature_var.value = m2 / total
    self.feature_count.value = total

  def encode(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Raw ``(B, feature_dim)`` features -> (mean, log_var), each ``(B, latent_dim)``."""
    stats = self.encoder(self.standardize(features)).astype(jnp.float32)
    return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

  def decode(self, latent: jax.Array, standardized: bool = False) -> jax.Array:
    """``(B, latent_dim)`` -> raw ``(B, feature_dim)`` features (standardised ones if asked)."""
    out = self.decoder(latent).astype(jnp.float32)
    return out if standardized else self.destandardize(out)

  def __call__(self, features: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
    """Encode, reparameterise with ``rng``, decode.

    Returns ``mean``, ``log_var``, ``latent`` ``(B, latent_dim)``; ``reconstruction`` (raw) and
    ``standardized_features`` / ``standardized_reconstruction`` ``(B, feature_dim)``, the space
    the losses are computed in.
    """
    mean, log_var = self.encode(features)
    latent = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    standardized_reconstruction = self.decode(latent, standardized=True)
    return {
      "mean": mean,
      "log_var": log_var,
      "latent": latent,
      "standardized_features": self.standardize(features),
      "standardized_reconstruction": standardized_reconstruction,
      "reconstruction": self.destandardize(standardized_reconstruction),
    }


class LatentDiscriminator(nn.Module):
  """``(B, feature_dim)`` expression features -> ``(B,)`` real/fake scores (spectral-norm MLP)."""

  hidden: Sequence[int] = (256, 256)
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
    score = _MLP(self.hidden, 1, spectral_norm=True, dtype=self.dtype, name="mlp")(features, train)
    return score[:, 0].astype(jnp.float32)
