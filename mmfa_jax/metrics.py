"""Image metrics of the evaluation protocol: L1, PSNR, SSIM (batched, jitted JAX) and the Fréchet
distance of FID (float64 NumPy on accumulated feature statistics).

Images are ``(B, H, W, 3)`` float arrays in [0, 1] (``data_range`` 1); every metric gives one value
per image, which the protocol averages over all evaluated frames.

- ``l1``: mean absolute difference.
- ``psnr``: ``10 log10(1 / MSE)`` dB, as scikit-image's ``peak_signal_noise_ratio`` with
  ``data_range=1`` (``inf`` for identical images).
- ``ssim``: scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1, channel_axis=-1)``: an 11-tap Gaussian window
  (``truncate=3.5``), ``K1 = 0.01``, ``K2 = 0.03``, the map averaged over the pixels at least 5
  from every border and over the channels.
- ``frechet_distance``: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``; the trace of the
  matrix square root is taken from the eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)``, which
  has the same spectrum as ``S1 S2`` (no complex round-off as with a general ``sqrtm``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.ops.pyramid import gaussian_taps

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def l1(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """Mean absolute difference per image, ``(B,)``."""
  difference = jnp.abs(prediction.astype(jnp.float32) - target.astype(jnp.float32))
  return jnp.mean(difference, axis=(1, 2, 3))


def psnr(prediction: jax.Array, target: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio per image in dB, ``(B,)`` (``inf`` where equal)."""
  difference = prediction.astype(jnp.float32) - target.astype(jnp.float32)
  mse = jnp.mean(difference**2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range**2 / mse)


def gaussian_window(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> np.ndarray:
  """The 1D taps of ``scipy.ndimage.gaussian_filter`` (radius ``int(truncate * sigma + 0.5)``)."""
  return gaussian_taps(sigma, int(truncate * sigma + 0.5)).astype(np.float32)


def _filter_valid(images: jax.Array, taps: jax.Array) -> jax.Array:
  """Separable filter of ``(B, H, W, C)`` images, valid positions only: ``(B, H-k+1, W-k+1, C)``."""
  k = taps.shape[0]
  channels = images.shape[-1]
  kernel_h = jnp.tile(taps.reshape(k, 1, 1, 1), (1, 1, 1, channels))  # (k, 1, 1, C), depthwise
  kernel_w = jnp.tile(taps.reshape(1, k, 1, 1), (1, 1, 1, channels))  # (1, k, 1, C)
  numbers = ("NHWC", "HWIO", "NHWC")
  out = jax.lax.conv_general_dilated(
    images, kernel_h, (1, 1), "VALID", dimension_numbers=numbers, feature_group_count=channels,
    precision=jax.lax.Precision.HIGHEST,
  )  # fmt: skip
  return jax.lax.conv_general_dilated(
    out, kernel_w, (1, 1), "VALID", dimension_numbers=numbers, feature_group_count=channels,
    precision=jax.lax.Precision.HIGHEST,
  )  # fmt: skip


def ssim(prediction: jax.Array, target: jax.Array, data_range: float = 1.0) -> jax.Array:
  """Structural similarity per image, ``(B,)`` (module docstring: scikit-image's Gaussian SSIM).

  Images must be at least 11 pixels on each side.
  """
  x = prediction.astype(jnp.float32)
  y = target.astype(jnp.float32)
  taps = jnp.asarray(gaussian_window())
  if min(x.shape[1:3]) < taps.shape[0]:
    raise ValueError(f"ssim needs images of at least {taps.shape[0]} pixels, got {x.shape[1:3]}")
  stacked = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)  # (B, H, W, 5C)
  means = _filter_valid(stacked, taps)
  mx, my, mxx, myy, mxy = jnp.split(means, 5, axis=-1)
  vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
  c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
  numerator = (2 * mx * my + c1) * (2 * cxy + c2)
  denominator = (mx * mx + my * my + c1) * (vx + vy + c2)
  return jnp.mean(numerator / denominator, axis=(1, 2, 3))


@jax.jit
def image_metrics(prediction: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
  """``{'l1', 'psnr', 'ssim'}``, each ``(B,)``, in one compiled call."""
  return {
    "l1": l1(prediction, target),
    "psnr": psnr(prediction, target),
    "ssim": ssim(prediction, target),
  }


# --------------------------------------------------------------------------------------------
# FID


class FeatureStatistics:
  """Running mean and covariance of feature vectors (float64), for the Fréchet distance."""

  def __init__(self, dim: int):
    self.count = 0
    self.sum = np.zeros(dim, np.float64)
    self.outer = np.zeros((dim, dim), np.float64)

  def add(self, features: np.ndarray) -> None:
    """Adds ``(N, dim)`` feature vectors."""
    features = np.asarray(features, np.float64)
    self.count += features.shape[0]
    self.sum += features.sum(axis=0)
    self.outer += features.T @ features

  def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (dim,), covariance (dim, dim))`` with the unbiased ``N - 1`` normalisation (as
    ``numpy.cov``, what pytorch-fid uses); needs two or more vectors."""
    if self.count < 2:
      raise ValueError(f"FID needs at least 2 images per set, got {self.count}")
    mean = self.sum / self.count
    covariance = (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)
    return mean, covariance


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
  values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
  return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
  mean1: np.ndarray, covariance1: np.ndarray, mean2: np.ndarray, covariance2: np.ndarray
) -> float:
  """The Fréchet distance between two Gaussians (module docstring), float64."""
  root1 = _symmetric_sqrt(np.asarray(covariance1, np.float64))
  middle = root1 @ np.asarray(covariance2, np.float64) @ root1
  trace_root = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None))))
  difference = np.asarray(mean1, np.float64) - np.asarray(mean2, np.float64)
  value = difference @ difference + np.trace(covariance1) + np.trace(covariance2) - 2 * trace_root
  return max(float(value), 0.0)


def fid(real: FeatureStatistics, generated: FeatureStatistics) -> float:
  """FID of two accumulated feature sets."""
  return frechet_distance(*real.mean_and_covariance(), *generated.mean_and_covariance())


def average_keypoint_distance(
  predicted: np.ndarray, target: np.ndarray, image_size: int
) -> np.ndarray:
  """AKD (FOMM's motion metric, MMFA's Table 1): per frame, the mean over landmarks of the
  Euclidean distance between a detector's landmarks on the generated and the real frame, in
  pixels. ``predicted``, ``target``: ``(B, L, 2)`` in [-1, 1] image units (2 units = the image
  side); returns ``(B,)``."""
  distance = np.linalg.norm(np.asarray(predicted) - np.asarray(target), axis=-1)  # (B, L)
  return distance.mean(axis=-1) * image_size / 2


def mean_finite(values: list[float]) -> float:
  """The mean of per-frame values; ``inf`` PSNRs (exact frames) count as 100 dB so one exact
  frame does not make the average infinite (noted in ``metrics.json``)."""
  if not values:
    return math.nan
  return float(np.mean([min(v, 100.0) if math.isinf(v) else v for v in values]))
