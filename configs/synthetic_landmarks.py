"""Pretraining the landmark detector for the synthetic world (``mmfa_jax/landmark_train.py``).

    python -m mmfa_jax.main --config=configs/synthetic_landmarks.py --workdir=runs/landmarks

``models.landmarks.LandmarkDetector`` with ``model.landmarks`` of ``configs/synthetic.py`` learns
the synthetic heads' face points (pupils, brows, nose, mouth, chin, forehead) from the training
heads against their true positions; ``runs/landmarks/landmarks`` is then what
``--config.pretrained.landmarks`` of an MMFA config with the landmark loss on takes (the frozen
detector of MMFA's landmark loss). ``:tiny`` is the tests' size.
"""

from __future__ import annotations

import ml_collections

from configs import synthetic
from mmfa_jax.landmark_train import landmark_task_config


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """``arg``: "small" (the detector of configs/synthetic.py) or "tiny" (tests)."""
  if arg not in ("small", "tiny"):
    raise ValueError(f"configs/synthetic_landmarks.py takes 'small' or 'tiny', got {arg!r}")
  settings = {}  # "small": landmark_train.LANDMARK_SETTINGS (600 steps of 32 frames)
  if arg == "tiny":
    settings = dict(batch_size=8, num_steps=3, frames_per_video=2, held_out_videos=2,
                    held_out_frames=2, log_every=1)  # fmt: skip
  config = landmark_task_config(synthetic.get_config(arg), **settings)
  if arg == "tiny":
    config.model.landmarks.update(dict(block_expansion=4, max_features=16))
  return config
