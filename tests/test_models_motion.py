"""Motion-side networks against their PyTorch twins, weights moved by pretrained_converters."""

import jax
import numpy as np
import pytest
import torch
from torch_oracles import to_channels_first

from mmfa_jax.models.blocks import ResBottleneck
from mmfa_jax.models.he_estimator import HEEstimator
from mmfa_jax.models.keypoint_detector import KPDetector
from pretrained_converters import he_estimator as he_converter
from pretrained_converters import keypoint_detector as kp_converter
from pretrained_converters import torch_reference as torch_twins
from pretrained_converters.common import CheckpointError, convert_state_dict

torch.manual_seed(0)


def _state_dict(module):
  return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def _images(shape, seed=0):
  return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _assert_close(got, want, atol=1e-4, rtol=1e-4):
  np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), atol=atol, rtol=rtol)


SMALL_KP = dict(
  num_kp=5, block_expansion=8, max_features=64, num_blocks=3, reshape_channels=128, reshape_depth=4
)


def test_kp_detector_matches_twin():
  twin = torch_twins.randomize_batchnorm(
    torch_twins.KPDetector(
      block_expansion=8,
      num_kp=5,
      max_features=64,
      reshape_channel=128,
      reshape_depth=4,
      num_blocks=3,
    )
  ).eval()
  images = _images((2, 64, 64, 3))
  model = KPDetector(**SMALL_KP)
  template = jax.eval_shape(model.init, jax.random.key(0), images)
  variables = kp_converter.convert(_state_dict(twin), template)
  got = model.apply(variables, images)
  with torch.no_grad():
    want = twin(to_channels_first(images))
  _assert_close(got["value"], want["value"], atol=1e-5)
  _assert_close(got["heatmap"], want["heatmap"].permute(0, 2, 3, 4, 1), atol=1e-5)
  assert got["heatmap"].shape == (2, 4, 16, 16, 5)
  assert np.abs(want["value"].numpy()).max() > 0.01  # keypoints are not all at the origin


def test_he_estimator_matches_twin_with_head_swap():
  widths, blocks = (16, 32, 64, 128), (1, 2, 1, 1)
  twin = torch_twins.randomize_batchnorm(
    torch_twins.HEEstimator(block_expansion=8, widths=widths, blocks=blocks, num_kp=5), seed=1
  ).eval()
  images = _images((2, 64, 64, 3), seed=1)
  model = HEEstimator(block_expansion=8, widths=widths, blocks=blocks, num_kp=5)
  template = jax.eval_shape(model.init, jax.random.key(0), images)
  state = _state_dict(twin)
  variables = he_converter.convert(state, template)
  got = model.apply(variables, images)
  with torch.no_grad():
    want = twin(to_channels_first(images))
  for name in ("yaw", "pitch", "roll", "t", "exp"):
    _assert_close(got[name], want[name])
  # The swap is real: Flax fc_yaw holds the torch fc_roll weights.
  np.testing.assert_array_equal(variables["params"]["fc_yaw"]["kernel"], state["fc_roll.weight"].T)


def test_resbottleneck_training_mode_matches_twin():
  twin = torch_twins.randomize_batchnorm(torch_twins.ResBottleneck(16, 2), seed=2).train()
  x = np.random.default_rng(2).normal(size=(3, 9, 9, 16)).astype(np.float32)
  block = ResBottleneck(stride=2)
  template = jax.eval_shape(lambda key, x: block.init(key, x, False), jax.random.key(0), x)
  variables = convert_state_dict(_state_dict(twin), template)
  got, updates = block.apply(variables, x, True, mutable=["batch_stats"])
  want = twin(to_channels_first(x))
  _assert_close(got, want.permute(0, 2, 3, 1), atol=1e-5)
  for name in ("norm1", "norm2", "norm3", "norm4"):
    norm = getattr(twin, name)
    _assert_close(updates["batch_stats"][name]["mean"], norm.running_mean, atol=1e-5)
    _assert_close(updates["batch_stats"][name]["var"], norm.running_var, atol=1e-5)


def test_converter_names_every_problem():
  twin = torch_twins.KPDetector(
    block_expansion=8, num_kp=5, max_features=64, reshape_channel=128, reshape_depth=4, num_blocks=3
  )
  images = _images((1, 64, 64, 3))
  template = jax.eval_shape(KPDetector(**SMALL_KP).init, jax.random.key(0), images)
  state = _state_dict(twin)
  del state["kp.bias"]
  state["kp.weight"] = state["kp.weight"][:4]
  state["extra.weight"] = np.zeros(3)
  with pytest.raises(CheckpointError) as error:
    kp_converter.convert(state, template, source="ckpt.pth")
  message = str(error.value)
  assert message.startswith("ckpt.pth: ")
  assert "missing keys (1): kp.bias" in message
  assert "kp.weight: file (4, 8, 3, 3, 3), model needs (5, 8, 3, 3, 3)" in message
  assert "unexpected keys (1): extra.weight" in message
