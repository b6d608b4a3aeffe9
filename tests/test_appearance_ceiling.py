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


def test_appearance_ceiling_refuses_a_config_without_synthetic_data():
  with pytest.raises(SystemExit, match="synthetic"):
    appearance_ceiling.main(["--config=synthetic:tiny:mmfa", "--steps=0"])
