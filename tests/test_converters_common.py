"""Safe reading of PyTorch weight files and the shared layout rules."""

import collections

import numpy as np
import pytest
import torch

from pretrained_converters.common import (
  CheckpointError,
  conv_kernel,
  dense_kernel,
  load_torch_state_dict,
)


def test_reads_plain_and_nested_checkpoints(tmp_path):
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  state = module.state_dict()
  torch.save(state, tmp_path / "plain.pth")
  loaded = load_torch_state_dict(tmp_path / "plain.pth")
  assert set(loaded) == set(state)
  np.testing.assert_array_equal(loaded["0.weight"], state["0.weight"].numpy())
  # A training checkpoint holding several modules, saved from DataParallel ("module." prefix).
  wrapped = collections.OrderedDict((f"module.{k}", v) for k, v in state.items())
  torch.save({"kp_detector": wrapped, "epoch": 3}, tmp_path / "00000003-checkpoint.pth.tar")
  nested = load_torch_state_dict(tmp_path / "00000003-checkpoint.pth.tar", key="kp_detector")
  assert set(nested) == set(state)


def test_bad_files_give_clear_errors(tmp_path):
  with pytest.raises(CheckpointError, match=r"missing\.pth: no such file"):
    load_torch_state_dict(tmp_path / "missing.pth")
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"this is not a torch file")
  with pytest.raises(CheckpointError, match=r"garbage\.pth: cannot be read"):
    load_torch_state_dict(garbage)
  torch.save({"generator": {}}, tmp_path / "ckpt.pth")
  with pytest.raises(CheckpointError, match="has no entry 'kp_detector'"):
    load_torch_state_dict(tmp_path / "ckpt.pth", key="kp_detector")
  torch.save([torch.zeros(2)], tmp_path / "list.pth")
  with pytest.raises(CheckpointError, match="expected a state_dict"):
    load_torch_state_dict(tmp_path / "list.pth")


class _Payload:
  """An arbitrary object: weights_only loading must refuse to unpickle it."""

  def __init__(self):
    self.value = 1


def test_refuses_arbitrary_pickles(tmp_path):
  torch.save({"weight": _Payload()}, tmp_path / "evil.pth")
  with pytest.raises(CheckpointError, match=r"evil\.pth: cannot be read"):
    load_torch_state_dict(tmp_path / "evil.pth")


def test_layouts():
  weight = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # [out, in, kh, kw]
  kernel = conv_kernel(weight)
  assert kernel.shape == (4, 5, 3, 2)
  assert kernel[1, 2, 0, 1] == weight[1, 0, 1, 2]
  assert conv_kernel(np.zeros((2, 3, 1, 4, 5))).shape == (1, 4, 5, 3, 2)
  assert dense_kernel(np.zeros((7, 3))).shape == (3, 7)
  with pytest.raises(CheckpointError, match="rank"):
    conv_kernel(np.zeros((2, 3)))
