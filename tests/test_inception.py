"""FID Inception (pytorch-fid's pool features) against its torch twin, through a real .pth file."""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_oracles import to_channels_first, to_channels_last

from mmfa_jax.models.inception import FEATURE_DIM, FIDInception, prepare_inception_input
from pretrained_converters import inception as inception_converter
from pretrained_converters.common import CheckpointError
from pretrained_converters.torch_inception import FIDInceptionV3, calibrate_batchnorm
from pretrained_converters.torch_reference import randomize_batchnorm

FILE_NAME = "pt_inception-2015-12-05-6726825d.pth"
NUM_CONVS = 94  # BasicConv2d layers of Inception v3, each conv.weight + 4 BatchNorm tensors


@pytest.fixture(scope="module")
def saved_twin(tmp_path_factory):
  """A random-weight twin (random BatchNorm affine, calibrated then randomised statistics), saved
  like the upstream file."""
  torch.manual_seed(0)
  twin = calibrate_batchnorm(randomize_batchnorm(FIDInceptionV3()))
  path = tmp_path_factory.mktemp("inception") / FILE_NAME
  torch.save(twin.state_dict(), path)
  return twin, path


def _relative_max_diff(got, want):
  want = np.asarray(want, np.float64)
  return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / max(1.0, np.abs(want).max())


def test_input_preparation_matches_interpolate():
  rng = np.random.default_rng(1)
  for shape in [(2, 75, 75, 3), (1, 320, 410, 3), (1, 299, 299, 3)]:  # up, down (non-square), same
    images = rng.random(shape, dtype=np.float32)
    resized = F.interpolate(
      to_channels_first(images), size=(299, 299), mode="bilinear", align_corners=False
    )
    want = to_channels_last(2 * resized - 1)
    np.testing.assert_allclose(prepare_inception_input(images), want, atol=2e-6)


def test_fid_inception_matches_twin_through_the_file(saved_twin):
  twin, path = saved_twin
  names = list(twin.state_dict())
  assert sum(name.endswith(".conv.weight") for name in names) == NUM_CONVS
  assert names[:2] == ["Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.weight"]
  assert names[-2:] == ["fc.weight", "fc.bias"]

  report = {}
  variables = inception_converter.convert_inception(path, report)
  assert report["tensors"] == 5 * NUM_CONVS
  assert {"fc.weight", "fc.bias"} <= set(report["ignored"])
  assert all(k.startswith("fc.") or k.endswith("num_batches_tracked") for k in report["ignored"])

  images = np.random.default_rng(0).random(inception_converter.VERIFY_SHAPE, dtype=np.float32)
  got = jax.jit(FIDInception().apply)(variables, images)
  with torch.no_grad():
    want = twin(to_channels_first(images)).numpy()
  assert got.shape == (2, FEATURE_DIM) and got.dtype == np.float32
  scale = np.abs(want).max()
  assert np.abs(want[0] - want[1]).max() > 0.01 * scale  # the features depend on the input
  diff = _relative_max_diff(got, want)
  print(f"max |jax - torch| / max(1, |torch|) = {diff:.2e} (max |torch| {scale:.3g})")
  assert diff <= 1e-4

  # The tool's --verify path: the file loaded strictly into the twin, same input shape.
  loaded = torch.load(path, weights_only=True)

  def load(module, entry=None, strict=True):
    module.load_state_dict(loaded, strict=strict)
    return module.eval()

  spec = inception_converter.SPEC
  with torch.no_grad():
    diffs = spec.verify(load, np.random.default_rng(0), variables, None, "spade")
  assert max(diffs.values()) <= spec.tolerance, diffs
  conversion = spec.convert(str(path), None, "spade")
  assert conversion.kind == "inception" and conversion.rows[0][1] == 5 * NUM_CONVS


def test_converter_errors_name_the_file(saved_twin, tmp_path):
  _, path = saved_twin
  truncated = tmp_path / "truncated_inception.pth"
  truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(CheckpointError, match="cannot be read") as error:
    inception_converter.convert_inception(truncated)
  assert str(truncated) in str(error.value)

  state = torch.load(path, weights_only=True)
  del state["Mixed_6c.branch7x7_2.bn.running_var"]
  state["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(192, 2048, 3, 3)
  broken = tmp_path / "broken_inception.pth"
  torch.save(state, broken)
  with pytest.raises(CheckpointError) as error:
    inception_converter.convert_inception(broken)
  message = str(error.value)
  assert str(broken) in message
  assert "missing keys (1): Mixed_6c.branch7x7_2.bn.running_var" in message
  assert "Mixed_7c.branch_pool.conv.weight: file (192, 2048, 3, 3)" in message
