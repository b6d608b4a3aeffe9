"""Configs load and carry the vox-256 numbers the ops and networks rely on."""

from configs import vox


def test_vox_config_numbers():
  config = vox.get_config()
  assert config.model.num_kp == 15
  kp = config.model.kp_detector
  assert kp.reshape_channels == kp.max_features * kp.reshape_depth == 16384
  gen = config.model.generator
  assert gen.reshape_channels * gen.reshape_depth == gen.max_features == 512
  assert tuple(config.perceptual_scales) == (1.0, 0.5, 0.25, 0.125)
  assert (config.transform.sigma_affine, config.transform.sigma_tps) == (0.05, 0.005)
