"""tools/convert_torch_weights.py end to end: upstream-layout files made here, converted through the
command line, loaded with the one loader, run against the PyTorch definitions; bad inputs refused."""

import os

import jax
import numpy as np
import pytest
import tool_runner
import torch
from safetensors.torch import save_file

from configs import synthetic
from mmfa_jax import checkpoints
from mmfa_jax.checkpoints import ConvertedWeightsError, load_converted
from mmfa_jax.models import VGG19, Hopenet, VGGFace
from pretrained_converters import torch_reference as ref
from pretrained_converters.convert import CONVERTERS, convert_file, face_vid2vid_model, verify


def run_tool(*args):
  return tool_runner.run_tool("convert_torch_weights.py", *args)


def _ok(result):
  assert result.returncode == 0, result.stdout + result.stderr
  return result.stdout


def _vgg19_file_state(twin):
  """torchvision vgg19 layout: features 0..34 and the classifier (values irrelevant, zeros)."""
  state = {k: v for k, v in twin.state_dict().items() if k.startswith("features.")}
  for index, cin in ((30, 512), (32, 512), (34, 512)):
    state[f"features.{index}.weight"] = torch.zeros(512, cin, 3, 3)
    state[f"features.{index}.bias"] = torch.zeros(512)
  for index, (out, cin) in ((0, (4096, 25088)), (3, (4096, 4096)), (6, (1000, 4096))):
    state[f"classifier.{index}.weight"] = torch.zeros(out, cin)
    state[f"classifier.{index}.bias"] = torch.zeros(out)
  return state


def test_the_converter_registry_is_the_one_source(tmp_path):
  """The tool's KINDs, its help, its --verify tolerance and the loader's converted kinds come from
  CONVERTERS; a file converted through the tool loads back as the registry converts it."""
  assert tuple(CONVERTERS) == checkpoints.CONVERTED_KINDS
  assert checkpoints.KINDS == checkpoints.CONVERTED_KINDS + checkpoints.TRAINED_KINDS
  assert all(spec.kind == kind for kind, spec in CONVERTERS.items())
  refused = run_tool("resnet", "--input", tmp_path / "x.pth", "--output", tmp_path / "out")
  assert refused.returncode == 2
  assert f"give exactly one KIND out of {', '.join(CONVERTERS)} (got" in refused.stderr
  usage = run_tool("--help").stdout
  for spec in CONVERTERS.values():
    assert f"{spec.kind:<13} {spec.description} (--verify tolerance {spec.tolerance:g})" in usage

  torch.manual_seed(0)
  path = tmp_path / "vgg19.pth"
  torch.save(ref.VGG19().state_dict(), path)  # features up to relu5_1 and the mean/std buffers
  spec = CONVERTERS["vgg19"]
  out = _ok(run_tool("vgg19", "--input", path, "--output", tmp_path / "vgg19", "--verify"))
  assert f"(tolerance {spec.tolerance:g})" in out and "TOO LARGE" not in out
  variables, metadata = load_converted(tmp_path / "vgg19", "vgg19")
  assert metadata["kind"] == "vgg19" and metadata["generator"] is None
  jax.tree.map(np.testing.assert_array_equal, variables, convert_file("vgg19", path).variables)
  diffs = verify("vgg19", path, variables)
  assert len(diffs) == 5 and max(diffs.values()) <= spec.tolerance


@pytest.mark.slow
def test_hopenet_vgg19_vggface_round_trip(tmp_path):
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  hopenet = ref.randomize_batchnorm(ref.Hopenet()).eval()
  save_file(
    {k: v.contiguous() for k, v in hopenet.state_dict().items()}, tmp_path / "hopenet.safetensors"
  )
  vgg19 = ref.VGG19().eval()
  torch.save(_vgg19_file_state(vgg19), tmp_path / "vgg19-dcbb9e9d.pth")
  vggface = ref.VGGFaceDag().eval()
  np.savez(tmp_path / "vgg_face_dag.npz", **{k: v.numpy() for k, v in vggface.state_dict().items()})

  for kind, path in (
    ("hopenet", tmp_path / "hopenet.safetensors"),
    ("vgg19", tmp_path / "vgg19-dcbb9e9d.pth"),
    ("vggface", tmp_path / "vgg_face_dag.npz"),
  ):
    out = _ok(run_tool(kind, "--input", path, "--output", tmp_path / kind, "--verify"))
    assert "ok" in out and "TOO LARGE" not in out

  variables, metadata = load_converted(tmp_path / "hopenet", "hopenet")
  assert metadata["source_file"] == "hopenet.safetensors" and len(metadata["source_sha256"]) == 64
  prepared = rng.normal(size=(1, 224, 224, 3)).astype(np.float32)
  got = jax.jit(Hopenet().apply)(variables, prepared)
  with torch.no_grad():
    want = hopenet(torch.from_numpy(prepared).permute(0, 3, 1, 2))
  for name, value in zip(("yaw", "pitch", "roll"), want):
    np.testing.assert_allclose(got[name], value.numpy(), atol=1e-4)

  images = rng.random((1, 64, 64, 3), dtype=np.float32)
  for kind, model, twin in (("vgg19", VGG19(), vgg19), ("vggface", VGGFace(), vggface)):
    variables, _ = load_converted(tmp_path / kind, kind)
    got = model.apply(variables, images)
    with torch.no_grad():
      want = twin(torch.from_numpy(images).permute(0, 3, 1, 2))
    for g, w in zip(got, want):
      scale = max(1.0, float(w.abs().max()))
      np.testing.assert_allclose(g, w.permute(0, 2, 3, 1).numpy(), atol=1e-4 * scale)


def _face_vid2vid_checkpoint(path, dataparallel=False):
  torch.manual_seed(1)
  config = synthetic.get_config("tiny:face_vid2vid")
  modules = ref.face_vid2vid_modules(config.model, "spade")
  source, kp = torch.rand(1, 3, 64, 64), 0.5 * torch.rand(1, 3, 3)
  ref.settle_spectral_norm(modules["generator"], source, kp, kp)
  ref.settle_spectral_norm(modules["discriminator"], {"1": source})
  for i, module in enumerate(modules.values()):
    ref.randomize_batchnorm(module, seed=i).eval()
  checkpoint = {}
  for name, module in modules.items():
    state = module.state_dict()
    checkpoint[name] = {f"module.{k}" if dataparallel else k: v for k, v in state.items()}
    optimizer = torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.5, 0.999))
    checkpoint[f"optimizer_{name}"] = optimizer.state_dict()
  checkpoint["epoch"] = 7
  torch.save(checkpoint, path)
  return config, modules


def test_face_vid2vid_checkpoint_round_trip(tmp_path):
  path = tmp_path / "00000099-checkpoint.pth.tar"
  config, modules = _face_vid2vid_checkpoint(path, dataparallel=True)
  out = _ok(
    run_tool(
      "face_vid2vid", "--input", path, "--output", tmp_path / "fv2v", "--verify",
      "--config=configs/synthetic.py:tiny:face_vid2vid",
    )
  )  # fmt: skip
  assert "animation prediction" in out and "TOO LARGE" not in out
  variables, metadata = load_converted(tmp_path / "fv2v", "face_vid2vid")
  assert (
    metadata["config"] == "configs/synthetic.py:tiny:face_vid2vid"
    and metadata["generator"] == "spade"
  )
  assert set(variables) == {"model", "discriminator"}
  rng = np.random.default_rng(2)
  source = rng.random((1, 64, 64, 3), dtype=np.float32)
  driving = rng.random((1, 64, 64, 3), dtype=np.float32)
  got = jax.jit(face_vid2vid_model(config, "spade").apply)(variables["model"], source, driving)
  with torch.no_grad():
    want = ref.animate_face_vid2vid(
      modules,
      torch.from_numpy(source).permute(0, 3, 1, 2),
      torch.from_numpy(driving).permute(0, 3, 1, 2),
    )
  np.testing.assert_allclose(got["prediction"], want.permute(0, 2, 3, 1).numpy(), atol=1e-3)


def test_bad_inputs_are_refused_with_exit_2(tmp_path):
  hopenet_state = ref.Hopenet(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64)).state_dict()
  good = tmp_path / "small_hopenet.pth"
  torch.save(hopenet_state, good)
  corrupt = tmp_path / "corrupt.pth"
  corrupt.write_bytes(os.urandom(4096))
  truncated = tmp_path / "truncated.pth"
  truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
  empty = tmp_path / "empty.pth"
  empty.write_bytes(b"")
  folder = tmp_path / "folder.pth"
  folder.mkdir()
  evil = tmp_path / "needs_code.pth"
  torch.save({"weight": torch.nn.ReLU()}, evil)  # unpickling it would construct a module
  cases = [
    (("hopenet", corrupt), "cannot be read"),
    (("hopenet", truncated), "cannot be read"),
    (("hopenet", evil), "cannot be read"),
    (("vgg19", good), "missing keys"),  # a Hopenet file given as VGG19
    (("hopenet", good), "shape mismatches"),  # a smaller network than Hopenet
    (("hopenet", tmp_path / "absent.pth"), "no such file"),
    (("hopenet", empty), "cannot be read"),
    (("hopenet", folder), "a folder, not a weights file"),
  ]
  for (kind, path), message in cases:
    result = run_tool(kind, "--input", path, "--output", tmp_path / "out")
    assert result.returncode == 2, (kind, path, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.stderr
    assert str(path.name) in lines[-1] and sum(x.startswith("error:") for x in lines) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
  (tmp_path / "taken").mkdir()
  result = run_tool("hopenet", "--input", good, "--output", tmp_path / "taken")
  assert result.returncode == 2 and "already exists" in result.stderr
  result = run_tool("resnet", "--input", good, "--output", tmp_path / "out")
  assert result.returncode == 2 and "KIND" in result.stderr
  (tmp_path / "notes.txt").write_text("a file")
  result = run_tool("hopenet", "--input", good, "--output", tmp_path / "notes.txt" / "out")
  assert result.returncode == 2 and "notes.txt" in result.stderr.strip().splitlines()[-1]
  assert "Traceback" not in result.stderr


def test_loader_errors(tmp_path):
  with pytest.raises(ConvertedWeightsError, match="no such directory"):
    load_converted(tmp_path / "nothing")
  (tmp_path / "plain").mkdir()
  with pytest.raises(ConvertedWeightsError, match="not a converted-weights directory"):
    load_converted(tmp_path / "plain")
  from mmfa_jax.checkpoints import save_converted

  save_converted(tmp_path / "tiny", {"w": np.ones(3, np.float32)}, {"kind": "vgg19"})
  with pytest.raises(ConvertedWeightsError, match="holds 'vgg19' weights, but 'hopenet'"):
    load_converted(tmp_path / "tiny", "hopenet")
  variables, _ = load_converted(tmp_path / "tiny", "vgg19")
  np.testing.assert_array_equal(variables["w"], np.ones(3))
  with pytest.raises(ConvertedWeightsError, match="already exists"):
    save_converted(tmp_path / "tiny", {"w": np.zeros(3)}, {"kind": "vgg19"})
  save_converted(
    tmp_path / "tiny", {"w": np.zeros(3, np.float32)}, {"kind": "vgg19"}, overwrite=True
  )
  np.testing.assert_array_equal(load_converted(tmp_path / "tiny")[0]["w"], np.zeros(3))
  # The folder above a converted one (a run's WORKDIR/pose_network for its hopenet/) names it.
  with pytest.raises(ConvertedWeightsError, match=r"no metadata.json\); it holds tiny/: pass"):
    load_converted(tmp_path)
  assert sorted(os.listdir(tmp_path)) == ["plain", "tiny"]  # no staging leftovers


def test_pretrained_section_is_checked_before_loading(tmp_path):
  from configs import vox
  from mmfa_jax.checkpoints import load_pretrained, save_converted

  config = vox.get_config()
  with pytest.raises(ConvertedWeightsError) as error:
    load_pretrained(config.pretrained)
  message = str(error.value)
  for kind in ("hopenet", "vgg19", "vggface"):
    assert f"config.pretrained.{kind} is not set" in message
  save_converted(tmp_path / "vgg", {"w": np.ones(2, np.float32)}, {"kind": "vgg19"})
  save_converted(tmp_path / "face", {"w": np.ones(2, np.float32)}, {"kind": "vggface"})
  config.pretrained.hopenet = str(tmp_path / "face")  # wrong kind
  config.pretrained.vgg19 = str(tmp_path / "vgg")
  config.pretrained.vggface = str(tmp_path / "missing")
  with pytest.raises(ConvertedWeightsError) as error:
    load_pretrained(config.pretrained)
  message = str(error.value)
  assert "holds 'vggface' weights, not 'hopenet'" in message
  assert "missing: no such directory" in message
  config.pretrained.hopenet = str(tmp_path / "vgg")
  loaded = load_pretrained(config.pretrained, kinds=("vgg19",))
  np.testing.assert_array_equal(loaded["vgg19"]["w"], np.ones(2))


@pytest.mark.slow
def test_verify_failure_exits_1_and_writes_nothing(tmp_path):
  """A file that converts but computes nothing sane (negative BatchNorm variance gives NaN)."""
  state = ref.Hopenet().state_dict()
  state["bn1.running_var"] = -torch.ones_like(state["bn1.running_var"])
  torch.save(state, tmp_path / "nan_hopenet.pth")
  result = run_tool(
    "hopenet", "--input", tmp_path / "nan_hopenet.pth", "--output", tmp_path / "out", "--verify"
  )
  assert result.returncode == 1, result.stdout + result.stderr
  assert "TOO LARGE" in result.stdout and "verification failed" in result.stderr
  assert not (tmp_path / "out").exists()
