"""LPIPS (AlexNet, v0.1): the Flax port against its PyTorch twin on random weights written to the
two upstream-layout .pth files and converted by ``pretrained_converters.lpips``; the metric's
identities; the converter's errors naming the file."""

import os

import jax
import numpy as np
import pytest
import torch
from torch_oracles import to_channels_first

from mmfa_jax.models.lpips import lpips
from pretrained_converters import torch_lpips
from pretrained_converters.common import CheckpointError
from pretrained_converters.lpips import SPEC, convert_lpips, input_paths, read_state

SHAPE = (2, 64, 64, 3)  # one shape everywhere: one compilation of ``lpips``
ATOL = 1e-4  # absolute, on distances of order 0.1-1
IDENTITY_ATOL = 1e-12  # what is left of 0 by float rounding


def _images(seed):
  return np.random.default_rng(seed).random(SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """The twin with random weights and its two files: (twin, alexnet_path, linear_path)."""
  torch.manual_seed(0)
  twin = torch_lpips.LPIPS().eval()
  with torch.no_grad():  # the real linear weights are non-negative, so are the distances
    for k in range(5):
      getattr(twin, f"lin{k}").model[1].weight.abs_()
  alexnet, linear = torch_lpips.split_file_states(twin.state_dict())
  # torchvision's file also holds the classifier (skipped by the converter, so any shapes do).
  for index in (1, 4, 6):
    alexnet[f"classifier.{index}.weight"] = torch.zeros(3, 2)
    alexnet[f"classifier.{index}.bias"] = torch.zeros(3)
  directory = tmp_path_factory.mktemp("lpips")
  alexnet_path = str(directory / "alexnet-owt-7be5be79.pth")
  linear_path = str(directory / "alex.pth")
  torch.save(alexnet, alexnet_path)
  torch.save(linear, linear_path)
  return twin, alexnet_path, linear_path


@pytest.fixture(scope="module")
def variables(files):
  _, alexnet_path, linear_path = files
  return convert_lpips(alexnet_path, linear_path)


def test_twin_state_dict_has_the_upstream_names(files):
  twin = files[0]
  want = {f"features.{i}.{leaf}" for i in (0, 3, 6, 8, 10) for leaf in ("weight", "bias")}
  want |= {f"lin{k}.model.1.weight" for k in range(5)}
  assert set(twin.state_dict()) == want
  assert twin.lin2.model[1].weight.shape == (1, 384, 1, 1)


def test_matches_torch_twin(files, variables):
  twin, alexnet_path, linear_path = files
  x = _images(0)
  near = np.clip(x + 0.05 * np.random.default_rng(1).standard_normal(SHAPE), 0, 1)
  near = near.astype(np.float32)
  for y in (_images(2), near):
    got = np.asarray(lpips(variables, x, y))
    assert got.shape == (2,) and got.dtype == np.float32
    with torch.no_grad():
      want = twin(to_channels_first(x), to_channels_first(y)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    assert np.all(want > 0)

  # The registry's route: the "ALEXNET_PTH,LINEAR_PTH" input, and --verify's check.
  conversion = SPEC.convert(f"{alexnet_path},{linear_path}", None, "spade")
  jax.tree.map(np.testing.assert_array_equal, conversion.variables, variables)
  assert [row[:2] for row in conversion.rows] == [("alexnet", 10), ("lpips linear", 5)]
  assert sorted(conversion.ignored) == sorted(
    f"classifier.{i}.{leaf}" for i in (1, 4, 6) for leaf in ("weight", "bias")
  )
  state = read_state(f"{alexnet_path},{linear_path}")

  def load(module, entry=None, strict=True):
    assert entry is None
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=strict)
    return module.eval()

  with torch.no_grad():
    diffs = SPEC.verify(load, np.random.default_rng(0), variables, None, "spade")
  assert set(diffs) == {"distance"} and diffs["distance"] <= SPEC.tolerance


def test_identity_and_symmetry(variables):
  """LPIPS(x, x) is 0 up to float rounding: under jit XLA may round the normalised features of the
  two images differently in the last bit (seen: ~1e-16 on CPU; exactly 0 without jit)."""
  x, y = _images(3), _images(4)
  np.testing.assert_allclose(lpips(variables, x, x), 0.0, rtol=0, atol=IDENTITY_ATOL)
  np.testing.assert_allclose(lpips(variables, x, y), lpips(variables, y, x), rtol=1e-6)


def test_converter_errors_name_the_file(files, tmp_path):
  twin, alexnet_path, linear_path = files
  truncated = str(tmp_path / "truncated.pth")
  with open(alexnet_path, "rb") as handle:
    data = handle.read()
  with open(truncated, "wb") as handle:
    handle.write(data[: len(data) // 2])
  with pytest.raises(CheckpointError, match=f"{truncated}: cannot be read"):
    convert_lpips(truncated, linear_path)

  wrong = str(tmp_path / "wrong_shape.pth")
  _, linear = torch_lpips.split_file_states(twin.state_dict())
  linear["lin3.model.1.weight"] = torch.zeros(1, 128, 1, 1)
  del linear["lin4.model.1.weight"]
  torch.save(linear, wrong)
  with pytest.raises(CheckpointError) as error:
    convert_lpips(alexnet_path, wrong)
  message = str(error.value)
  assert message.startswith(f"{wrong}: ")
  assert "lin3.model.1.weight: file (1, 128, 1, 1), model needs (1, 256, 1, 1)" in message
  assert "missing keys (1): lin4.model.1.weight" in message

  with pytest.raises(CheckpointError, match="look swapped"):
    convert_lpips(linear_path, alexnet_path)
  with pytest.raises(CheckpointError, match="ALEXNET_PTH,LINEAR_PTH"):
    input_paths(os.path.dirname(alexnet_path))
  assert input_paths(f"{alexnet_path}, {linear_path}") == (alexnet_path, linear_path)


def test_the_command_line_tool_converts_and_verifies_the_pair(files, variables, tmp_path):
  """``tools/convert_torch_weights.py lpips --input ALEXNET,LINEAR --verify``: both files named
  and hashed in the metadata, the arrays those of ``convert_lpips``."""
  import json

  import tool_runner

  from mmfa_jax.checkpoints import file_sha256, load_converted

  _, alexnet_path, linear_path = files
  out = tmp_path / "lpips"
  done = tool_runner.run_tool(
    "convert_torch_weights.py", "lpips", "--input", f"{alexnet_path},{linear_path}", "--output",
    out, "--verify",
  )  # fmt: skip
  assert done.returncode == 0, done.stderr
  assert "distance" in done.stdout and "ok" in done.stdout
  metadata = json.loads((out / "metadata.json").read_text())
  assert metadata["source_file"] == "alexnet-owt-7be5be79.pth,alex.pth"
  assert metadata["source_sha256"] == f"{file_sha256(alexnet_path)},{file_sha256(linear_path)}"
  loaded, _ = load_converted(out, "lpips")
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)
