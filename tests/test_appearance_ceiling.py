"""benchmarks/appearance_ceiling.py: the generator trained alone with exact motion."""

import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks"))

import appearance_ceiling


def test_appearance_ceiling_trains_and_scores_the_held_out_heads(tmp_path):
  records = appearance_ceiling.main(
    [
      "--config=synthetic:tiny",
      "--steps=2",
      "--eval-every=1",
      "--eval-heads=2",
      "--batch-size=2",
      f"--output={tmp_path}",
      f"--json={tmp_path / 'ceiling.jsonl'}",
    ]
  )
  assert [r["step"] for r in records] == [0, 1, 2]
  assert records[0]["loss"] is None
  assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in records[1:])
  assert [json.loads(line) for line in open(tmp_path / "ceiling.jsonl")] == records
  # The last PSNR, recomputed from the grid (held-out head | output, 8-bit): within rounding.
  grid = np.asarray(Image.open(tmp_path / "grid.png"), np.float64) / 255
  size = grid.shape[1] // 2
  assert grid.shape == (2 * size, 2 * size, 3)
  heads, outputs = grid[:, :size], grid[:, size:]
  psnr = [
    10 * np.log10(1 / np.mean((o - h) ** 2))
    for h, o in zip(np.split(heads, 2), np.split(outputs, 2))
  ]
  assert records[-1]["held_out_psnr"] == pytest.approx(np.mean(psnr), abs=0.05)
  assert 3 < records[-1]["held_out_psnr"] < 40
  blurred = records[0]["blurred_psnr"]  # more blur, lower PSNR
  assert list(blurred) == ["1.0", "2.0", "3.0"] and blurred["1.0"] > blurred["2.0"] > blurred["3.0"]


def test_oracle_pairs_carry_the_true_face_points_of_their_frames():
  """``--motion oracle``: each training pair is two frames of one head with the renderer's face
  points of those frames; the held-out pairs drive frame 0 by frames 8, 16, ..., 56."""
  from configs import synthetic
  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads, face_points

  config = synthetic.get_config("tiny")
  config.data.synthetic.update(num_videos=2, num_frames=8)
  pairs = appearance_ceiling.Pairs(config, "oracle", eval_heads=1)
  heads = SyntheticHeads(0, 2, 8)
  source, driving, kp_source, kp_driving = pairs.sample(np.random.default_rng(0), 3)
  for i in range(3):  # which (video, frame) each sampled item is, found by its pixels
    videos = []
    for frames, kp in ((source[i], kp_source[i]), (driving[i], kp_driving[i])):
      ((video, frame),) = [
        (v, f) for v in range(2) for f in (0, 4) if np.array_equal(heads.frame(v, f, 64), frames)
      ]
      want = face_points(heads.identity(video), heads.motion(video, frame))[:3]
      np.testing.assert_array_equal(kp, want)
      videos.append(video)
    assert videos[0] == videos[1]  # one head per pair
  held = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=1)
  held_source, held_driving, held_kp_source, held_kp_driving = pairs.held_out
  assert len(held_driving) == 7
  np.testing.assert_array_equal(held_source[3], held.frame(0, 0, 64))
  np.testing.assert_array_equal(held_driving[3], held.frame(0, 32, 64))
  for kp, frame in ((held_kp_source[3], 0), (held_kp_driving[3], 32)):
    np.testing.assert_array_equal(kp, face_points(held.identity(0), held.motion(0, frame))[:3])


def test_oracle_run_reports_the_copy_source_baseline_and_the_background_weight(tmp_path):
  from configs import synthetic
  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads

  records = appearance_ceiling.main(
    ["--config=synthetic:tiny", "--motion=oracle", "--steps=1", "--eval-heads=1",
     "--batch-size=2"]
  )  # fmt: skip
  held = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=1)
  size = synthetic.get_config("tiny").image_size
  copies = [
    10 * np.log10(1 / np.mean((held.frame(0, 0, size) - held.frame(0, f, size)) ** 2))
    for f in range(8, 64, 8)
  ]
  assert records[-1]["copy_source_psnr"] == pytest.approx(np.mean(copies), abs=1e-3)
  # 3 keypoints + the background: the initial mask is close to uniform over the 4 slots.
  assert abs(records[0]["mask_background"] - 0.25) < 0.1
  assert 0 <= records[-1]["mask_background"] <= 1 and records[-1]["motion"] == "oracle"


def test_appearance_ceiling_refuses_a_config_without_synthetic_data():
  with pytest.raises(SystemExit, match="synthetic"):
    appearance_ceiling.main(["--config=synthetic:tiny:mmfa", "--steps=0"])


def test_blurred_psnr_is_the_psnr_of_a_hand_blurred_image():
  """One bright pixel on black, blurred by sigma 1 (borders far away): the blurred image's
  squared error is the kernel's (1 - w0)^2 + sum of the other w^2, w the 2D Gaussian weights."""
  frame = np.zeros((1, 21, 21, 3))
  frame[0, 10, 10] = 1.0
  taps = np.exp(-0.5 * np.arange(-4, 5) ** 2)
  taps /= taps.sum()  # scipy truncates at 4 sigma
  weights = np.outer(taps, taps)
  squared = np.sum(weights**2) - 2 * weights[4, 4] + 1  # sum over the kernel of (w - delta)^2
  expected = 10 * np.log10(1 / (squared / (21 * 21)))
  assert appearance_ceiling.blurred_psnr(frame, (1.0,))[1.0] == pytest.approx(expected, abs=1e-6)
