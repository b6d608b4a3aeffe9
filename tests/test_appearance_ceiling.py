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
