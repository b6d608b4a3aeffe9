"""scoring.Scores: AKD against a hand-computed detector, each frame's landmarks detected once."""

import numpy as np
import pytest

from mmfa_jax.data.evaluation import Item
from mmfa_jax.scoring import Scores


def test_akd_detects_each_frame_once_and_matches_a_hand_computation():
  """A 'detector' returning each frame's mean colour as one landmark: the model's, the baseline's
  and frame 0's AKD equal the mean distances computed here, and the detector sees the source
  once, each target frame once and each generated frame once (frame 0's score reuses them)."""
  rng = np.random.default_rng(0)
  source = rng.uniform(size=(16, 16, 3)).astype(np.float32)
  target = rng.uniform(size=(5, 16, 16, 3)).astype(np.float32)
  saved = rng.uniform(size=(5, 16, 16, 3)).astype(np.float32)
  seen = []

  def detector(images):
    seen.append(len(images))
    return images.mean((1, 2))[:, None, :2] * 2 - 1  # (B, 1, 2) in [-1, 1]

  scores = Scores(["akd"], None, None, batch_size=2, own_frame=True, landmarks=detector)
  scores.add(Item("v", source, target, target), saved)
  result = scores.summary()

  def points(images):
    return images.mean((1, 2))[:, :2] * 2 - 1  # (B, 2)

  def akd(a, b):
    return np.linalg.norm((points(a) - points(b)) * 16 / 2, axis=-1)  # pixels at 16 px

  assert result["metrics"]["akd"] == pytest.approx(akd(saved, target).mean(), rel=1e-5)
  copies = np.broadcast_to(source, target.shape)
  want = akd(copies, target).mean()
  assert result["baselines"]["copy_source"]["akd"] == pytest.approx(want, rel=1e-5)
  assert result["self_reconstruction"]["akd"] == pytest.approx(akd(saved, target)[0], rel=1e-5)
  # source 1; per batch of 2, 2, 1: the targets and the model's frames; nothing for frame 0.
  assert seen == [1, 2, 2, 2, 2, 1, 1]
