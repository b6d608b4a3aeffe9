"""Each loss term on hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfa_jax import losses
from mmfa_jax.ops import TPSTransform, make_coordinate_grid


def test_feature_l1_and_perceptual_pyramid():
  a = [jnp.ones((1, 2, 2, 1)), jnp.zeros((1, 1, 1, 2))]
  b = [jnp.zeros((1, 2, 2, 1)), jnp.full((1, 1, 1, 2), 3.0)]
  np.testing.assert_allclose(losses.feature_l1(a, b, (2.0, 0.5)), 2 * 1 + 0.5 * 3)

  def features(x):  # identity "network": one layer, the image itself
    return [x]

  prediction = jnp.full((1, 8, 8, 3), 0.75)
  target = jnp.full((1, 8, 8, 3), 0.25)
  # At scale 1 the difference is 0.5 everywhere; at scale 0.5 the zero-padded blur shrinks both
  # images equally at the borders, so the mean difference is 0.5 times the mean kernel coverage.
  full = losses.perceptual_pyramid(
    features, prediction, target, scales=(1.0,), layer_weights=(10.0,)
  )
  np.testing.assert_allclose(full, 5.0, rtol=1e-6)
  half = losses.perceptual_pyramid(
    features, prediction, target, scales=(0.5,), layer_weights=(1.0,)
  )
  coverage = float(
    jnp.mean(jax.lax.stop_gradient(losses.antialias_downsample(jnp.ones((1, 8, 8, 1)), 0.5)))
  )
  np.testing.assert_allclose(half, 0.5 * coverage, rtol=1e-5)


def test_multiscale_perceptual_uses_each_outputs_own_resolution():
  def features(x):
    return [x]

  target = jnp.full((1, 64, 64, 3), 0.5)
  perfect = {64: target, 32: losses.antialias_downsample(target, 0.5)}
  np.testing.assert_allclose(
    losses.multiscale_perceptual(features, perfect, target, (1.0,), 16), 0.0, atol=1e-7
  )
  off = {64: target + 0.1, 32: perfect[32]}
  # Only the 64 output is off: scales 1, 1/2, 1/4 (64, 32, 16 >= min_size 16).
  value = losses.multiscale_perceptual(features, off, target, (1.0,), 16)
  expected = losses.perceptual_pyramid(features, target + 0.1, target, (1.0, 0.5, 0.25), (1.0,))
  np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_vggface_weights():
  ones = [jnp.ones((1, 1, 1, 1))] * 5
  zeros = [jnp.zeros((1, 1, 1, 1))] * 5
  value = losses.vggface_perceptual(
    lambda x: ones if x.sum() > 0 else zeros, jnp.ones((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3))
  )
  np.testing.assert_allclose(value, 10 * (1 / 32 + 1 / 16 + 1 / 8 + 1 / 4 + 1) / 255, rtol=1e-6)


def test_gan_losses_hand_values():
  real, fake = [jnp.array([1.0, 0.5])], [jnp.array([0.0, -0.5])]
  np.testing.assert_allclose(losses.generator_gan(fake, "ls"), ((1 - 0) ** 2 + 1.5**2) / 2)
  np.testing.assert_allclose(losses.generator_gan(fake, "hinge"), 0.25)
  np.testing.assert_allclose(
    losses.discriminator_gan(real, fake, "ls"), ((0 + 0) + (0.25 + 0.25)) / 2
  )
  np.testing.assert_allclose(
    losses.discriminator_gan(real, fake, "hinge"), (0 + 0.5) / 2 + (1 + 0.5) / 2
  )
  with pytest.raises(ValueError, match="gan mode"):
    losses.generator_gan(fake, "wgan")
  np.testing.assert_allclose(
    losses.feature_matching([jnp.ones(3), jnp.zeros(2)], [jnp.zeros(3), jnp.ones(2)], (10.0, 1.0)),
    11.0,
  )


def test_equivariance_with_identity_and_shift():
  control = make_coordinate_grid((5, 5)).reshape(-1, 2)
  shift = TPSTransform(jnp.array([[[1.0, 0, 0.1], [0, 1.0, -0.2]]]), control, jnp.zeros((1, 25)))
  kp_t = jnp.array([[[0.2, 0.3, 0.9], [-0.4, 0.1, -0.5]]])
  kp_d = kp_t[..., :2] + jnp.array([0.1, -0.2])
  np.testing.assert_allclose(
    losses.equivariance(jnp.concatenate([kp_d, kp_t[..., 2:]], -1), kp_t, shift), 0.0, atol=1e-7
  )
  np.testing.assert_allclose(losses.equivariance(kp_t, kp_t, shift), (0.1 + 0.2) / 2, rtol=1e-6)


def test_keypoint_prior_hand_case():
  # Two keypoints 0.2 apart (squared 0.04 < 0.1): off-diagonal terms 0.06 each, diagonal terms
  # 0.1 - 3e-12 each; depth mean z = 0.33 exactly -> no depth term.
  kp = jnp.array([[[0.0, 0.0, 0.33], [0.2, 0.0, 0.33]]])
  np.testing.assert_allclose(losses.keypoint_prior(kp), 2 * 0.06 + 2 * 0.1, atol=1e-6)
  np.testing.assert_allclose(losses.keypoint_prior(kp, include_diagonal=False), 2 * 0.06, atol=1e-6)
  far = jnp.array([[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # depth off by 0.33
  np.testing.assert_allclose(losses.keypoint_prior(far, include_diagonal=False), 0.33, atol=1e-6)


def test_small_terms():
  np.testing.assert_allclose(
    losses.deformation_prior(jnp.array([[[1.0, -2.0, 0.5]], [[0.0, 0.0, 1.0]]])), (3.5 + 1) / 2
  )
  np.testing.assert_allclose(
    losses.headpose({"yaw": jnp.array([10.0]), "pitch": jnp.array([0.0]), "roll": jnp.array([-5.0])},
                    {"yaw": jnp.array([7.0]), "pitch": jnp.array([1.0]), "roll": jnp.array([-5.0])}),
    4.0,
  )  # fmt: skip
  a = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  b = jnp.array([[0.0, 1.0], [2.0, 2.0]])
  np.testing.assert_allclose(losses.representation(a, b), (1 - 0 + 1 - 1) / 2, atol=1e-6)
  np.testing.assert_allclose(
    losses.identity_consistency(jnp.ones((1, 2, 3)), jnp.zeros((1, 2, 3))), 1.0
  )
  predicted, target = jnp.zeros((1, 2, 2)), jnp.array([[[1.0, 1.0], [0.0, 0.0]]])
  np.testing.assert_allclose(losses.landmark(predicted, target), 0.5)
  np.testing.assert_allclose(
    losses.landmark(predicted, target, jnp.array([3.0, 1.0])), (1 * 1.5 + 0) / 2
  )
  np.testing.assert_allclose(losses.kl_divergence(jnp.zeros((2, 4)), jnp.zeros((2, 4))), 0.0)
  np.testing.assert_allclose(losses.kl_divergence(jnp.ones((1, 2)), jnp.zeros((1, 2))), 1.0)
  np.testing.assert_allclose(
    losses.kl_divergence(jnp.zeros((1, 1)), jnp.log(jnp.full((1, 1), 2.0))),
    0.5 * (2 - 1 - np.log(2)),
    rtol=1e-6,
  )
  np.testing.assert_allclose(losses.reconstruction_mse(jnp.ones(4), jnp.zeros(4)), 1.0)


def test_stop_gradient_on_targets():
  def features(x):
    return [x]

  grad_target = jax.grad(
    lambda t: losses.perceptual_pyramid(features, jnp.ones((1, 4, 4, 1)), t, (1.0,), (1.0,))
  )(jnp.zeros((1, 4, 4, 1)))
  np.testing.assert_array_equal(grad_target, 0.0)
  grad_prior = jax.grad(lambda k: losses.keypoint_prior(k))(
    jnp.array([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]])
  )
  assert float(jnp.abs(grad_prior).sum()) > 0


def test_generated_perceptual_picks_the_generators_form():
  rng = np.random.default_rng(7)
  target = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
  predictions = {s: jnp.asarray(rng.uniform(size=(2, s, s, 3)), jnp.float32) for s in (32, 16, 8)}

  def features(images):
    return [images]

  multi = {"prediction": predictions[32], "predictions": predictions}
  want = losses.multiscale_perceptual(features, predictions, target, (2.0,), 16)
  got = losses.generated_perceptual(features, multi, target, (2.0,), (1.0, 0.5), 16)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  single = {"prediction": predictions[32]}
  want = losses.perceptual_pyramid(features, predictions[32], target, (1.0, 0.5), (2.0,))
  got = losses.generated_perceptual(features, single, target, (2.0,), (1.0, 0.5), 16)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(got) > 0
