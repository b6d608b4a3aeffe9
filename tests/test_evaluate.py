"""python -m mmfa_jax.evaluate: both protocols end to end on a tiny converted model, over frame
folders written here and on held-out synthetic heads; metrics recomputed from the saved PNGs with
scikit-image; the copy-the-source baseline; exit status 2 with one line for bad input."""

import json
import os

import numpy as np
import pytest
from model_helpers import save_random_face_vid2vid
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mmfa_jax import evaluate
from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads
from mmfa_jax.data.video import read_image, write_image

SIZE = 64
FRAMES = 3
VIDEOS = ("id0#a", "id0#b", "id1#c")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return save_random_face_vid2vid(tmp_path_factory.mktemp("evaluate") / "fv2v", SIZE)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
  """ROOT/test/<video>/<frame>.png: three synthetic videos, two of one identity."""
  root = tmp_path_factory.mktemp("data")
  heads = SyntheticHeads(seed=5, num_videos=len(VIDEOS), num_frames=FRAMES)
  for index, name in enumerate(VIDEOS):
    for frame in range(FRAMES):
      write_image(root / "test" / name / f"{frame:04d}.png", heads.frame(index, frame, SIZE))
  return root


def _args(model_dir, *extra):
  return ["--checkpoint", str(model_dir), "--batch-size", "2", *extra]


def _skimage_scores(predictions, targets):
  psnr = [
    min(peak_signal_noise_ratio(t, p, data_range=1.0), 100.0) for p, t in zip(predictions, targets)
  ]
  ssim = [
    structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                          data_range=1.0, channel_axis=-1)
    for p, t in zip(predictions, targets)
  ]  # fmt: skip
  l1 = [np.abs(p - t).mean() for p, t in zip(predictions, targets)]
  return {"l1": np.mean(l1), "psnr": np.mean(psnr), "ssim": np.mean(ssim)}


def test_reconstruction_on_frame_folders(model_dir, data_root, tmp_path):
  out = tmp_path / "out"
  argv = _args(
    model_dir, "--data", str(data_root), "--metrics", "l1,psnr,ssim", "--output", str(out)
  )
  assert evaluate.main(argv) == 0
  result = json.loads((out / "metrics.json").read_text())
  assert result["counts"] == {"videos": 3, "frames": 9, "skipped_videos": 0}
  assert result["protocol"] == "reconstruction" and result["mode"] == "absolute"
  predictions, targets, sources = [], [], []
  for name in VIDEOS:
    saved = sorted(os.listdir(out / "frames" / name))
    assert saved == [f"{i:07d}.png" for i in range(FRAMES)]
    truth = [read_image(str(data_root / "test" / name / f"{i:04d}.png")) for i in range(FRAMES)]
    predictions += [read_image(str(out / "frames" / name / f)) for f in saved]
    targets += truth
    sources += [truth[0]] * FRAMES
  want = _skimage_scores(predictions, targets)
  for name, value in want.items():
    assert result["metrics"][name] == pytest.approx(value, abs=1e-4), name
  baseline = _skimage_scores(sources, targets)  # frame 0 of each video is exact: 100 dB
  for name, value in baseline.items():
    assert result["baselines"]["copy_source"][name] == pytest.approx(value, abs=1e-4), name
  # Frame 0 alone (the source driven by itself): the appearance path's ceiling.
  own = _skimage_scores(predictions[::FRAMES], targets[::FRAMES])
  assert set(result["self_reconstruction"]) == set(own)
  for name, value in own.items():
    assert result["self_reconstruction"][name] == pytest.approx(value, abs=1e-4), name
  table = (out / "table.md").read_text()
  assert "| mmfa_jax | " in table and "| copy source | " in table and "PSNR" in table
  assert "| mmfa_jax, frame 0 (source driven by itself) | " in table
  # The grid: a row per video, source | driver | output at the frame farthest from the source.
  grid = read_image(str(out / "grid.png"))
  cell = SIZE + 2
  assert grid.shape == (len(VIDEOS) * cell, 3 * cell, 3)
  for row, name in enumerate(VIDEOS):
    truth = np.stack([targets[VIDEOS.index(name) * FRAMES + i] for i in range(FRAMES)])
    farthest = int(np.abs(truth - truth[0]).mean(axis=(1, 2, 3)).argmax())
    tiles = [grid[row * cell : row * cell + SIZE, c * cell : c * cell + SIZE] for c in range(3)]
    output = read_image(str(out / "frames" / name / f"{farthest:07d}.png"))
    for tile, want in zip(tiles, (truth[0], truth[farthest], output)):
      np.testing.assert_allclose(tile, want, atol=1 / 255 + 1e-6)


def test_cross_identity_on_synthetic_heads_against_exact_targets(model_dir, tmp_path):
  out = tmp_path / "cross"
  argv = _args(model_dir, "--data", "synthetic", "--protocol", "cross_identity",
               "--num-videos", "2", "--max-frames", "2", "--output", str(out))  # fmt: skip
  assert evaluate.main(argv) == 0
  result = json.loads((out / "metrics.json").read_text())
  assert result["counts"]["frames"] == 4 and result["mode"] == "relative"
  assert set(result["metrics"]) == {"l1", "psnr", "ssim"}  # no LPIPS / Inception weights given
  assert "self_reconstruction" not in result  # reconstruction only
  assert sorted(os.listdir(out / "frames")) == [
    "synthetic000_by_synthetic001",
    "synthetic001_by_synthetic000",
  ]
  # The exact target of frame 0 is the source identity in the source's own pose with the
  # driver's first expression: closer to the source image than the driver's frame is.
  items = list(evaluate.synthetic_items("cross_identity", SIZE, 2, 2))
  source, driver, target = items[0].source, items[0].driving[0], items[0].target[0]
  assert np.abs(target - source).mean() < np.abs(target - driver).mean()
  # The grid has the exact target as a fourth column.
  grid = read_image(str(out / "grid.png"))
  cell = SIZE + 2
  assert grid.shape == (2 * cell, 4 * cell, 3)
  farthest = int(np.abs(items[1].target - items[1].source).mean(axis=(1, 2, 3)).argmax())
  np.testing.assert_allclose(
    grid[cell : cell + SIZE, 3 * cell : 3 * cell + SIZE],
    items[1].target[farthest],
    atol=1 / 255 + 1e-6,
  )

  # Pose edits by +-20 degrees, saved and scored against the renderer's exact target.
  from mmfa_jax.data.synthetic import render_head
  from mmfa_jax.inference import Animator

  animator = Animator.from_checkpoint(str(model_dir), batch_size=2)
  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=2)
  assert set(result["edits"]) == {"yaw", "pitch", "roll"}
  for attribute, scores in result["edits"].items():
    assert scores["degrees"] == 20.0 and scores["mean_abs_error_deg"] >= 0
    psnr, copy_psnr, change = [], [], []
    for video in range(2):
      truth = heads.motion(video, 0)
      # output_change: the saved edits against the render at the model's own unedited angle.
      state = animator.encode_source(heads.frame(video, 0, SIZE))
      estimate = np.asarray(getattr(animator.source_motion(state), attribute), np.float32)
      unedited = animator.render(state, animator.edit_keypoints(state, **{attribute: estimate}))
      saved = [
        read_image(str(out / "edits" / attribute / f"{video:03d}" / f"{index:07d}.png"))
        for index in range(2)
      ]
      change.append(np.mean(np.abs(np.stack(saved) - unedited)))
      for index, delta in enumerate((-20.0, 20.0)):
        moved = dict(truth, **{attribute: truth[attribute] + delta})
        want = render_head(heads.identity(video), moved, SIZE)
        got = read_image(str(out / "edits" / attribute / f"{video:03d}" / f"{index:07d}.png"))
        psnr.append(peak_signal_noise_ratio(want, got, data_range=1.0))
        source = heads.frame(video, 0, SIZE)
        copy_psnr.append(peak_signal_noise_ratio(want, source, data_range=1.0))
    assert scores["psnr"] == pytest.approx(np.mean(psnr), abs=1e-3), attribute
    assert scores["copy_source"]["psnr"] == pytest.approx(np.mean(copy_psnr), abs=1e-3)
    assert scores["output_change"] == pytest.approx(np.mean(change), abs=1 / 255), attribute
  assert "Pose edits" in (out / "table.md").read_text()
  assert "output change (L1)" in (out / "table.md").read_text()
  assert "copy source angle error" in (out / "table.md").read_text()


def _save_random_hopenet(directory, metadata, widths=(8, 16, 32, 64)):
  """A randomly initialised tiny Hopenet as a converted directory."""
  import jax

  from mmfa_jax.checkpoints import save_converted
  from mmfa_jax.models.hopenet import Hopenet

  network = Hopenet(layers=(1, 1, 1, 1), widths=widths)
  variables = network.init(jax.random.key(3), np.zeros((1, 224, 224, 3), np.float32))
  save_converted(directory, jax.device_get(variables), {"kind": "hopenet", **metadata})
  return network, variables


def test_pose_network_reads_the_edits_angles(model_dir, tmp_path, capsys):
  """--pose-network DIR: the edit error is |angle(edit) - angle(target)| as that network reads
  the saved edits and the renderer's targets; its shape comes from its metadata."""
  from mmfa_jax.data.synthetic import render_head
  from mmfa_jax.models.hopenet import hopenet_head_pose

  shape = {"layers": [1] * 4, "widths": [8, 16, 16, 32]}  # not the model's own
  network, variables = _save_random_hopenet(
    tmp_path / "reader", {"network": shape}, (8, 16, 16, 32)
  )
  out = tmp_path / "out"
  argv = _args(model_dir, "--data", "synthetic", "--protocol", "cross_identity", "--metrics",
               "l1", "--num-videos", "1", "--max-frames", "1", "--pose-network",
               str(tmp_path / "reader"), "--output", str(out))  # fmt: skip
  assert evaluate.main(argv) == 0
  capsys.readouterr()
  result = json.loads((out / "metrics.json").read_text())
  assert result["edit_angles_read_by"] == str(tmp_path / "reader")
  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=1)
  for attribute in ("yaw", "roll"):
    edits, targets = [], []
    for video in range(1):
      truth = heads.motion(video, 0)
      for index, delta in enumerate((-20.0, 20.0)):
        edits.append(read_image(str(out / "edits" / attribute / f"{video:03d}/{index:07d}.png")))
        moved = dict(truth, **{attribute: truth[attribute] + delta})
        targets.append(render_head(heads.identity(video), moved, SIZE))
    source = heads.frame(0, 0, SIZE)[None]
    frames = np.concatenate([np.stack(edits + targets), source]).astype(np.float32)
    angles = np.asarray(hopenet_head_pose(network, variables, frames)[attribute])  # (5,)
    want = np.mean(np.abs(angles[:2] - angles[2:4]))
    got = result["edits"][attribute]["mean_abs_error_deg"]
    assert got == pytest.approx(float(want), abs=1e-3) and want > 0
    # The same error of an edit that turns nothing: the source itself, read by the same network.
    unturned = np.mean(np.abs(angles[4] - angles[2:4]))
    got = result["edits"][attribute]["copy_source"]["mean_abs_error_deg"]
    assert got == pytest.approx(float(unturned), abs=1e-3) and unturned != pytest.approx(want)

  # Without a shape in its metadata the reader takes the model's own: other arrays do not fit it,
  # which is one error line naming the directory.
  _save_random_hopenet(tmp_path / "bare", {}, (8, 16, 16, 32))
  bad = [
    (["--data", "synthetic", "--pose-network", str(tmp_path / "bare")], "bare: its arrays do not fit"),
    (["--data", "synthetic", "--pose-network", str(tmp_path / "nothing")], "--pose-network: "),
    (["--data", str(tmp_path), "--pose-network", str(tmp_path / "reader")],
     "--data synthetic scores"),
  ]  # fmt: skip
  for extra, message in bad:
    assert evaluate.main(_args(model_dir, *extra, "--output", str(tmp_path / "o"))) == 2, extra
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], (extra, err)
  assert not (tmp_path / "o").exists()


def test_default_pairs_take_another_identity():
  assert evaluate.default_pairs(list(VIDEOS)) == [
    ("id0#a", "id1#c"),
    ("id0#b", "id1#c"),
    ("id1#c", "id0#a"),
  ]
  assert evaluate.default_pairs(["id0#a", "id0#b"]) == []


def test_bad_input_exits_2_with_one_line(model_dir, data_root, tmp_path, capsys):
  pairs = tmp_path / "pairs.csv"
  pairs.write_text("source,driving\nid0#a,nobody\n")
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  cases = [
    (["--data", str(tmp_path / "missing")], "no such data folder"),
    (["--data", str(data_root), "--metrics", "l1,sharpness"], "unknown ['sharpness']"),
    (["--data", str(data_root), "--metrics", "lpips"], "pass --lpips DIR"),
    (["--data", str(data_root), "--metrics", "akd"], "pass --landmarks DIR"),
    (["--data", str(data_root), "--protocol", "cross_identity", "--metrics", "l1"],
     "no ground truth"),
    (["--data", str(data_root), "--protocol", "cross_identity"], "needs --inception"),
    (["--data", str(data_root), "--protocol", "cross_identity", "--pairs", str(pairs),
      "--metrics", "fid", "--inception", str(tmp_path / "no_inception")], "no such directory"),
    (["--data", str(data_root), "--max-frames", "0"], "--max-frames must be at least 1"),
    (["--data", str(tmp_path)], "no such folder"),
  ]  # fmt: skip
  for extra, message in cases:
    output = ["--output", str(a_file)] if "a_file" in message else ["--output", str(tmp_path / "o")]
    assert evaluate.main(_args(model_dir, *extra, *output)) == 2, extra
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (extra, err)
  assert not (tmp_path / "o").exists()
  assert evaluate.main(_args(model_dir, "--data", str(data_root), "--output", str(a_file))) == 2
  assert "is a file" in capsys.readouterr().err
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "thesis.tex").write_text("keep me")
  assert evaluate.main(_args(model_dir, "--data", str(data_root), "--output",
                             str(tmp_path / "mine"))) == 2  # fmt: skip
  assert "mine: a folder holding more than an evaluation ('thesis.tex'" in capsys.readouterr().err
  assert os.listdir(tmp_path / "mine") == ["thesis.tex"]


def test_a_failed_evaluation_leaves_no_partial_output(model_dir, data_root, tmp_path, monkeypatch):
  """Frames are saved in a staging folder: a run stopped after its first video (here by an error,
  as by Ctrl-C) leaves neither the output folder nor the staging folder."""
  save_frames = evaluate._save_frames
  calls = []

  def stopped(*args):
    calls.append(args[0])
    if len(calls) == 2:
      raise evaluate.cli.CommandError("stopped after one video")
    return save_frames(*args)

  monkeypatch.setattr(evaluate, "_save_frames", stopped)
  output = tmp_path / "out"
  assert evaluate.main(_args(model_dir, "--data", str(data_root), "--output", str(output))) == 2
  assert len(calls) == 2 and not output.exists() and os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def metric_networks(tmp_path_factory):
  """Random LPIPS and FID Inception twins saved as the upstream files, converted by the tool's
  converters: ``(lpips dir, inception dir, lpips twin, inception twin)``."""
  import torch

  from mmfa_jax.checkpoints import file_sha256, save_converted
  from pretrained_converters import torch_lpips
  from pretrained_converters.convert import convert_file
  from pretrained_converters.torch_inception import FIDInceptionV3, calibrate_batchnorm
  from pretrained_converters.torch_reference import randomize_batchnorm

  root = tmp_path_factory.mktemp("metric_networks")
  torch.manual_seed(0)
  inception = calibrate_batchnorm(randomize_batchnorm(FIDInceptionV3()))
  torch.save(inception.state_dict(), root / "pt_inception.pth")
  lpips = torch_lpips.LPIPS().eval()
  with torch.no_grad():
    for k in range(5):  # LPIPS' linear weights are non-negative
      getattr(lpips, f"lin{k}").model[1].weight.abs_()
  alexnet, linear = torch_lpips.split_file_states(lpips.state_dict())
  torch.save(alexnet, root / "alexnet.pth")
  torch.save(linear, root / "alex.pth")
  for kind, source in (("inception", root / "pt_inception.pth"),
                       ("lpips", f"{root / 'alexnet.pth'},{root / 'alex.pth'}")):  # fmt: skip
    variables = convert_file(kind, source).variables
    sha = ",".join(file_sha256(p) for p in str(source).split(","))
    save_converted(root / kind, variables, {"kind": kind, "source_sha256": sha})
  return root / "lpips", root / "inception", lpips, inception


def test_lpips_and_fid_equal_the_torch_twins_on_the_saved_frames(
  model_dir, data_root, metric_networks, tmp_path
):
  import torch

  from mmfa_jax.metrics import FeatureStatistics, fid

  lpips_dir, inception_dir, lpips, inception = metric_networks
  out = tmp_path / "all"
  argv = _args(model_dir, "--data", str(data_root), "--num-videos", "2", "--lpips", str(lpips_dir),
               "--inception", str(inception_dir), "--output", str(out))  # fmt: skip
  assert evaluate.main(argv) == 0
  result = json.loads((out / "metrics.json").read_text())
  assert set(result["metrics"]) == {"l1", "psnr", "ssim", "lpips", "fid"}
  assert set(result["weights"]) == {"lpips", "inception"}
  predictions, targets = [], []
  for name in VIDEOS[:2]:
    predictions += [read_image(str(p)) for p in sorted((out / "frames" / name).iterdir())]
    targets += [read_image(str(data_root / "test" / name / f"{i:04d}.png")) for i in range(FRAMES)]

  def nchw(frames):
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)

  with torch.no_grad():
    want_lpips = lpips(nchw(predictions), nchw(targets)).mean().item()
    generated, real = FeatureStatistics(2048), FeatureStatistics(2048)
    generated.add(inception(nchw(predictions)).numpy())
    real.add(inception(nchw(targets)).numpy())
  assert result["metrics"]["lpips"] == pytest.approx(want_lpips, abs=1e-4)
  want_fid = fid(real, generated)
  assert want_fid > 0
  assert result["metrics"]["fid"] == pytest.approx(want_fid, rel=1e-3)


def test_ctrl_c_during_evaluate_leaves_no_output(model_dir, tmp_path):
  """SIGINT once frames are being scored: one 'interrupted' line, exit 130, neither the output
  folder nor its staging folder left."""
  import sys

  from tool_runner import interrupt_when

  output = tmp_path / "scores"
  command = [sys.executable, "-m", "mmfa_jax.evaluate", *_args(model_dir), "--data", "synthetic",
             "--metrics", "l1", "--edit-degrees", "0", "--output", str(output)]  # fmt: skip
  scored = rb"evaluate: [1-9]\d* ?frame"  # the first video's frames are saved
  running, status, text = interrupt_when(command, scored)
  assert running, text[-2000:]
  assert status == 130, text[-2000:]
  assert f"interrupted: nothing was written to {output}" in text and "Traceback" not in text
  assert os.listdir(tmp_path) == []


def test_akd_from_a_landmark_detector_equals_its_landmarks_by_hand(model_dir, tmp_path):
  """``--landmarks``: AKD (pixels) of the model and of copying the source, recomputed from the
  saved frames with the detector rebuilt from its directory's metadata."""
  import jax

  from mmfa_jax.checkpoints import save_converted
  from mmfa_jax.models.landmarks import FrozenLandmarks

  detector = FrozenLandmarks((2.0, 1.0, 1.0), input_size=32, block_expansion=4, max_features=8)
  variables = detector.detector.init(jax.random.key(3), np.zeros((1, SIZE, SIZE, 3), np.float32))
  save_converted(tmp_path / "lm", variables, {"kind": "landmarks", **detector.metadata()})
  out = tmp_path / "out"
  argv = _args(model_dir, "--data", "synthetic", "--num-videos", "2", "--max-frames", "3",
               "--metrics", "psnr,akd", "--landmarks", str(tmp_path / "lm"),
               "--edit-degrees", "0", "--output", str(out))  # fmt: skip
  assert evaluate.main(argv) == 0
  result = json.loads((out / "metrics.json").read_text())
  assert set(result["metrics"]) == {"psnr", "akd"} and "landmarks" in result["weights"]
  rebuilt = FrozenLandmarks.from_metadata(
    json.loads((tmp_path / "lm" / "metadata.json").read_text())
  )
  points = jax.jit(rebuilt.apply)
  model, copy = [], []
  for item in evaluate.synthetic_items("reconstruction", SIZE, 2, 3):
    saved = np.stack(
      [read_image(str(out / "frames" / item.name / f"{i:07d}.png")) for i in range(3)]
    )
    truth = np.asarray(points(variables, item.target))
    for frames, into in ((saved, model), (np.repeat(item.source[None], 3, 0), copy)):
      distance = np.linalg.norm(np.asarray(points(variables, frames)) - truth, axis=-1)  # (F, L)
      into.extend(distance.mean(-1) * SIZE / 2)
  assert result["metrics"]["akd"] == pytest.approx(np.mean(model), rel=1e-3, abs=1e-4)
  assert result["baselines"]["copy_source"]["akd"] == pytest.approx(np.mean(copy), rel=1e-3)
  assert result["baselines"]["copy_source"]["akd"] > 0
  assert "AKD ↓" in (out / "table.md").read_text()
