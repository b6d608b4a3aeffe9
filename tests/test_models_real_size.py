"""Real vox-256 widths at 256 x 256, batch 1: KPDetector, HEEstimator and dense motion vs twins."""

import jax
import numpy as np
import pytest
import torch
from torch_oracles import to_channels_first

from configs import vox
from mmfa_jax.models import DenseMotionNetwork, HEEstimator, KPDetector
from mmfa_jax.models.summary import REFERENCE_PARAM_COUNTS
from pretrained_converters import he_estimator as he_converter
from pretrained_converters import keypoint_detector as kp_converter
from pretrained_converters import motion as motion_converter
from pretrained_converters import torch_reference as torch_twins

pytestmark = pytest.mark.slow


def _state(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _convert(model, twin, converter, *args):
  template = jax.eval_shape(lambda key, *a: model.init(key, *a), jax.random.key(0), *args)
  return converter(_state(twin), template)


def _count(module):
  return sum(p.numel() for p in module.parameters())


def test_kp_detector_and_he_estimator_real_size():
  config = vox.get_config().model
  image = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
  kp_twin = torch_twins.randomize_batchnorm(torch_twins.KPDetector()).eval()
  assert _count(kp_twin) == REFERENCE_PARAM_COUNTS["kp_detector"]
  kp_model = KPDetector(**dict(config.kp_detector), num_kp=config.num_kp)
  variables = _convert(kp_model, kp_twin, kp_converter.convert, image)
  got = jax.jit(kp_model.apply)(variables, image)
  with torch.no_grad():
    want = kp_twin(to_channels_first(image))
  np.testing.assert_allclose(got["value"], want["value"].numpy(), atol=1e-4)
  np.testing.assert_allclose(
    got["heatmap"], want["heatmap"].permute(0, 2, 3, 4, 1).numpy(), atol=1e-4
  )
  del kp_twin, variables

  he_twin = torch_twins.randomize_batchnorm(torch_twins.HEEstimator(), seed=1).eval()
  assert _count(he_twin) == REFERENCE_PARAM_COUNTS["he_estimator"]
  he_model = HEEstimator()
  variables = _convert(he_model, he_twin, he_converter.convert, image)
  got = jax.jit(he_model.apply)(variables, image)
  with torch.no_grad():
    want = he_twin(to_channels_first(image))
  for name in ("yaw", "pitch", "roll", "t", "exp"):
    scale = max(1.0, float(want[name].abs().max()))
    np.testing.assert_allclose(got[name], want[name].numpy(), atol=1e-4 * scale, err_msg=name)


def test_dense_motion_real_size():
  rng = np.random.default_rng(2)
  feature = rng.normal(size=(1, 16, 64, 64, 32)).astype(np.float32)
  kp_source = rng.uniform(-0.9, 0.9, (1, 15, 3)).astype(np.float32)
  kp_driving = (kp_source + rng.normal(0, 0.1, kp_source.shape)).astype(np.float32)
  twin = torch_twins.randomize_batchnorm(torch_twins.DenseMotionNetwork(), seed=3).eval()
  assert _count(twin) == REFERENCE_PARAM_COUNTS["dense_motion"]
  model = DenseMotionNetwork(**dict(vox.get_config().model.dense_motion))
  variables = _convert(
    model,
    twin,
    lambda s, t: motion_converter.convert_by_name(s, t, "dense_motion"),
    feature,
    kp_source,
    kp_driving,
  )
  got = jax.jit(model.apply)(variables, feature, kp_source, kp_driving)
  with torch.no_grad():
    want = twin(
      to_channels_first(feature), torch.from_numpy(kp_driving), torch.from_numpy(kp_source)
    )
  np.testing.assert_allclose(got["mask"], want["mask"].permute(0, 2, 3, 4, 1).numpy(), atol=1e-4)
  np.testing.assert_allclose(got["deformation"], want["deformation"].numpy(), atol=1e-4)
  np.testing.assert_allclose(
    got["occlusion_map"], want["occlusion_map"].permute(0, 2, 3, 1).numpy(), atol=1e-4
  )
