"""Expression VAE and its latent-feature discriminator (mmfa_delta.md 14).

The VAE maps a frozen expression feature ``f_exp`` ``(B, 128)`` to a Gaussian ``q(z | f_exp)``
(``mean``, ``log_var`` ``(B, 32)``), samples ``z = mean + exp(log_var / 2) * eps`` and decodes back
to ``(B, 128)``. The discriminator (MLP with spectral norm) scores 128-d feature vectors for the
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

  def setup(self) -> None:
    self.encoder = _MLP(self.hidden, 2 * self.latent_dim, dtype=self.dtype)
    self.decoder = _MLP(self.hidden, self.feature_dim, dtype=self.dtype)

  def encode(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(B, feature_dim)`` -> (mean, log_var), each ``(B, latent_dim)``."""
    stats = self.encoder(features).astype(jnp.float32)
    return stats[:, : self.latent_dim], stats[:, self.latent_dim :]

  def decode(self, latent: jax.Array) -> jax.Array:
    """``(B, latent_dim)`` -> ``(B, feature_dim)``."""
    return self.decoder(latent).astype(jnp.float32)

  def __call__(self, features: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
    """Encode, reparameterise with ``rng``, decode: ``mean``, ``log_var``, ``latent``, ``reconstruction``."""
    mean, log_var = self.encode(features)
    latent = mean + jnp.exp(0.5 * log_var) * jax.random.normal(rng, mean.shape)
    return {
      "mean": mean,
      "log_var": log_var,
      "latent": latent,
      "reconstruction": self.decode(latent),
    }


class LatentDiscriminator(nn.Module):
  """``(B, feature_dim)`` expression features -> ``(B,)`` real/fake scores (spectral-norm MLP)."""

  hidden: Sequence[int] = (256, 256)
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
    score = _MLP(self.hidden, 1, spectral_norm=True, dtype=self.dtype, name="mlp")(features, train)
    return score[:, 0].astype(jnp.float32)
