"""mmfa_jax.metrics against scikit-image (PSNR, SSIM), NumPy (L1) and closed forms (FID)."""

import math

import numpy as np
import pytest
import scipy.linalg
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mmfa_jax import metrics


def _pairs(seed, shape=(3, 37, 29, 3)):
  rng = np.random.default_rng(seed)
  target = rng.uniform(size=shape).astype(np.float32)
  prediction = np.clip(target + rng.normal(0, 0.1, shape), 0, 1).astype(np.float32)
  return prediction, target


def test_l1_psnr_ssim_equal_scikit_image():
  prediction, target = _pairs(0)
  got = {k: np.asarray(v) for k, v in metrics.image_metrics(prediction, target).items()}
  for i in range(prediction.shape[0]):
    p, t = prediction[i].astype(np.float64), target[i].astype(np.float64)
    assert got["l1"][i] == pytest.approx(np.abs(p - t).mean(), abs=1e-6)
    assert got["psnr"][i] == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0), abs=1e-3)
    want = structural_similarity(
      t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
      channel_axis=-1,
    )  # fmt: skip
    assert got["ssim"][i] == pytest.approx(want, abs=1e-4)
  assert float(np.asarray(metrics.ssim(target, target))[0]) == pytest.approx(1.0, abs=1e-6)
  assert math.isinf(float(np.asarray(metrics.psnr(target, target))[0]))


def test_ssim_of_structured_images_equals_scikit_image():
  """A smooth image with a shifted copy: SSIM well inside (0, 1), where the window matters."""
  y, x = np.mgrid[0:48, 0:40] / 40.0
  target = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y), x * y], axis=-1) * 0.5 + 0.5
  prediction = np.roll(target, 2, axis=1)
  got = float(np.asarray(metrics.ssim(prediction[None], target[None]))[0])
  want = structural_similarity(
    target, prediction, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1.0, channel_axis=-1,
  )  # fmt: skip
  assert 0.2 < want < 0.98
  assert got == pytest.approx(want, abs=1e-4)


def test_frechet_distance_closed_form_and_scipy_route():
  rng = np.random.default_rng(1)
  # Diagonal covariances: sum (m1 - m2)^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = rng.uniform(0.1, 2.0, 6), rng.uniform(0.1, 2.0, 6)
  m1, m2 = rng.normal(size=6), rng.normal(size=6)
  want = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  assert metrics.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(want, rel=1e-10)
  # Full covariances: pytorch-fid's route through scipy's sqrtm.
  f1, f2 = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8))
  s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
  mu1, mu2 = f1.mean(0), f2.mean(0)
  root = scipy.linalg.sqrtm(s1 @ s2).real
  scipy_value = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(scipy_value, rel=1e-8)


def test_feature_statistics_and_fid_of_a_set_with_itself():
  rng = np.random.default_rng(2)
  features = rng.normal(size=(40, 5)) * [1, 2, 3, 4, 5]
  stats = metrics.FeatureStatistics(5)
  for chunk in np.array_split(features, 3):
    stats.add(chunk)
  mean, covariance = stats.mean_and_covariance()
  np.testing.assert_allclose(mean, features.mean(0), atol=1e-12)
  np.testing.assert_allclose(covariance, np.cov(features, rowvar=False), atol=1e-10)
  assert metrics.fid(stats, stats) == pytest.approx(0.0, abs=1e-8)
  with pytest.raises(ValueError, match="at least 2 images"):
    metrics.FeatureStatistics(5).mean_and_covariance()


def test_average_keypoint_distance_by_hand():
  predicted = np.array([[[0.0, 0.0], [0.5, 0.5]], [[1.0, -1.0], [0.0, 0.0]]], np.float32)
  target = np.array([[[0.3, 0.4], [0.5, 0.5]], [[1.0, -1.0], [0.0, -0.1]]], np.float32)
  # Frame 0: distances 0.5 and 0 units; frame 1: 0 and 0.1. At 64 px one unit is 32 px.
  np.testing.assert_allclose(
    metrics.average_keypoint_distance(predicted, target, 64), [0.25 * 32, 0.05 * 32], rtol=1e-6
  )
