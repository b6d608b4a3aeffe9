"""Every training loss of MMFA and of the face-vid2vid baseline, one function per term.

Formulas follow architecture.md 9 (reference) and mmfa_delta.md 7-14 (MMFA). Images are
``(B, H, W, 3)`` in [0, 1]; keypoints ``(B, K, 3)`` (x, y, z); "mean" is over every element.
Targets are wrapped in ``stop_gradient`` where the reference detaches them. Weights are arguments
(the config's ``loss`` section supplies them); each function returns a scalar.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mmfa_jax.ops.pyramid import antialias_downsample
from mmfa_jax.ops.tps import TPSTransform, warp_coordinates

FeatureFn = Callable[[jax.Array], Sequence[jax.Array]]

VGGFACE_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def feature_l1(
  features_a: Sequence[jax.Array], features_b: Sequence[jax.Array], weights: Sequence[float]
) -> jax.Array:
  """``sum_l w_l * mean|a_l - stop_gradient(b_l)|``."""
  return sum(
    w * jnp.mean(jnp.abs(a - jax.lax.stop_gradient(b)))
    for a, b, w in zip(features_a, features_b, weights)
  )


def perceptual_pyramid(
  features: FeatureFn,
  prediction: jax.Array,
  target: jax.Array,
  scales: Sequence[float] = (1.0, 0.5, 0.25, 0.125),
  layer_weights: Sequence[float] = (10.0,) * 5,
) -> jax.Array:
  """Reference perceptual loss: at each scale (anti-aliased pyramid) the VGG19 features of the
  prediction against those of the target (detached), L1 per layer weighted (architecture.md 9)."""
  total = 0.0
  for scale in scales:
    pred = antialias_downsample(prediction, scale)
    real = antialias_downsample(target, scale)
    total = total + feature_l1(features(pred), features(real), layer_weights)
  return total


def multiscale_perceptual(
  features: FeatureFn,
  predictions: Mapping[int, jax.Array],
  target: jax.Array,
  layer_weights: Sequence[float] = (10.0,) * 5,
  min_size: int = 32,
) -> jax.Array:
  """MMFA: each output O_r against the ground truth downsampled to r (mmfa_delta 7), each over
  its own pyramid down to ``min_size`` (256: 256..32, 128: 128..32, 64: 64..32), equal weights."""
  full = target.shape[1]
  total = 0.0
  for size, prediction in predictions.items():
    ground_truth = antialias_downsample(target, size / full) if size != full else target
    scales = []
    scale = 1.0
    while size * scale >= min_size:
      scales.append(scale)
      scale /= 2
    total = total + perceptual_pyramid(features, prediction, ground_truth, scales, layer_weights)
  return total


def vggface_perceptual(
  features: FeatureFn, prediction: jax.Array, target: jax.Array, weight: float = 10.0
) -> jax.Array:
  """VGG-Face term on the full-size output: imaginaire's layer weights, L1 divided by 255."""
  return weight * feature_l1(features(prediction), features(target), VGGFACE_LAYER_WEIGHTS) / 255


def generator_gan(fake_maps: Sequence[jax.Array], mode: str = "ls") -> jax.Array:
  """``ls``: mean((1 - D(G))^2); ``hinge``: -mean(D(G)); summed over discriminator scales."""
  if mode == "ls":
    return sum(jnp.mean((1 - m) ** 2) for m in fake_maps)
  if mode == "hinge":
    return sum(-jnp.mean(m) for m in fake_maps)
  raise ValueError(f"gan mode must be 'ls' or 'hinge', got {mode!r}")


def discriminator_gan(
  real_maps: Sequence[jax.Array], fake_maps: Sequence[jax.Array], mode: str = "ls"
) -> jax.Array:
  """``ls``: mean((1 - D(x))^2 + D(G)^2); ``hinge``: mean(relu(1 - D(x))) + mean(relu(1 + D(G)))."""
  if mode == "ls":
    return sum(jnp.mean((1 - r) ** 2 + f**2) for r, f in zip(real_maps, fake_maps))
  if mode == "hinge":
    return sum(
      jnp.mean(jax.nn.relu(1 - r)) + jnp.mean(jax.nn.relu(1 + f))
      for r, f in zip(real_maps, fake_maps)
    )
  raise ValueError(f"gan mode must be 'ls' or 'hinge', got {mode!r}")


def feature_matching(
  real_features: Sequence[jax.Array],
  fake_features: Sequence[jax.Array],
  weights: Sequence[float] = (10.0,) * 4,
) -> jax.Array:
  """``sum_i w_i mean|D_i(x) - D_i(G)|`` over the discriminator's block outputs (real detached)."""
  return feature_l1(fake_features, real_features, weights)


def equivariance(
  kp_driving: jax.Array, kp_transformed: jax.Array, transform: TPSTransform
) -> jax.Array:
  """``mean|kp_d[:, :, :2] - T(kp_t[:, :, :2])|``: keypoints of the warped frame mapped back by T."""
  mapped = warp_coordinates(transform, kp_transformed[..., :2])
  return jnp.mean(jnp.abs(kp_driving[..., :2] - mapped))


def keypoint_prior(
  keypoints: jax.Array, distance: float = 0.1, depth: float = 0.33, include_diagonal: bool = True
) -> jax.Array:
  """Reference keypoint prior: sum over ordered pairs (i, j) of mean_b max(0, D - |kp_i - kp_j|^2)
  plus mean_b |mean_k z_k - depth|. As in the reference the i = j terms are included (each is
  D - 3e-12, so a constant of about K * D, 1.5 for vox-256, with no gradient) and the distance adds
  1e-6 to the difference, like ``F.pairwise_distance``; ``include_diagonal=False`` drops them."""
  difference = keypoints[:, :, None, :] - keypoints[:, None, :, :] + 1e-6  # (B, K, K, 3)
  squared = jnp.sum(difference**2, axis=-1)  # (B, K, K)
  penalty = jax.nn.relu(distance - squared)
  if not include_diagonal:
    penalty = penalty * (1 - jnp.eye(keypoints.shape[1]))
  separation = jnp.sum(jnp.mean(penalty, axis=0))
  depth_term = jnp.mean(jnp.abs(jnp.mean(keypoints[..., 2], axis=-1) - depth))
  return separation + depth_term


def deformation_prior(deformation: jax.Array) -> jax.Array:
  """Mean over the batch of the L1 norm of the flattened deformation (the reference's on exp)."""
  return jnp.mean(jnp.sum(jnp.abs(deformation.reshape(deformation.shape[0], -1)), axis=-1))


def generated_perceptual(
  features: FeatureFn,
  generated: Mapping[str, Any],
  target: jax.Array,
  layer_weights: Sequence[float],
  scales: Sequence[float],
  min_size: int,
) -> jax.Array:
  """The perceptual loss of a generator's outputs: ``multiscale_perceptual`` over MMFA's
  multi-scale generator's ``predictions`` (its sizes down to ``min_size``), else
  ``perceptual_pyramid`` of ``prediction`` at ``scales``."""
  if "predictions" in generated:
    return multiscale_perceptual(
      features, generated["predictions"], target, layer_weights, min_size
    )
  return perceptual_pyramid(features, generated["prediction"], target, scales, layer_weights)


def headpose(predicted: Mapping[str, jax.Array], target: Mapping[str, jax.Array]) -> jax.Array:
  """Face-vid2vid: mean |yaw| + mean |pitch| + mean |roll| differences in degrees (target detached)."""
  return sum(
    jnp.mean(jnp.abs(predicted[k] - jax.lax.stop_gradient(target[k])))
    for k in ("yaw", "pitch", "roll")
  )


def representation(features_a: jax.Array, features_b: jax.Array, eps: float = 1e-8) -> jax.Array:
  """MMFA eq. 7: mean(1 - cos(f(I_d), f(A(I_d)))), both branches trained."""
  dot = jnp.sum(features_a * features_b, axis=-1)
  norms = jnp.linalg.norm(features_a, axis=-1) * jnp.linalg.norm(features_b, axis=-1)
  return jnp.mean(1 - dot / jnp.maximum(norms, eps))


def identity_consistency(canonical_source: jax.Array, canonical_driving: jax.Array) -> jax.Array:
  """MMFA eq. 8: mean |x_c(I_s) - x_c(I_d)| (same identity, same canonical keypoints)."""
  return jnp.mean(jnp.abs(canonical_source - canonical_driving))


def landmark(
  predicted: jax.Array, target: jax.Array, point_weights: jax.Array | None = None
) -> jax.Array:
  """MMFA eq. 9: weighted L1 between 2D landmarks ``(B, L, 2)`` in normalised coordinates; the
  weights ``(L,)`` carry the per-part factors (eyes, mouth, rest) and are normalised to mean 1."""
  error = jnp.mean(jnp.abs(predicted - jax.lax.stop_gradient(target)), axis=(0, 2))  # (L,)
  if point_weights is None:
    return jnp.mean(error)
  weights = point_weights / jnp.mean(point_weights)
  return jnp.mean(error * weights)


def kl_divergence(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, exp(log_var)) || N(0, I)), summed over latent dims, mean over the batch."""
  return jnp.mean(0.5 * jnp.sum(jnp.exp(log_var) + mean**2 - 1 - log_var, axis=-1))


def reconstruction_mse(reconstruction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over every element (target detached)."""
  return jnp.mean((reconstruction - jax.lax.stop_gradient(target)) ** 2)
