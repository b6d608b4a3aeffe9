"""Pretraining the pose network for the synthetic world (``mmfa_jax/pose_train.py``).

    python -m mmfa_jax.main --config=configs/synthetic_pose.py --workdir=runs/synthetic_pose

The Hopenet-shaped network at the widths of ``configs/synthetic.py`` learns yaw, pitch and roll
from the synthetic training heads against their ground truth; ``runs/synthetic_pose/hopenet`` is
then what ``--config.pretrained.hopenet`` of an MMFA config with ``model.pose_network='hopenet'``
takes (the frozen pose network, exactly as vox uses Hopenet). ``:tiny`` is the tests' size.
"""

from __future__ import annotations

import ml_collections

from configs import synthetic
from mmfa_jax.pose_train import pose_task_config


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """``arg``: "small" (the network of configs/synthetic.py) or "tiny" (tests)."""
  if arg not in ("small", "tiny"):
    raise ValueError(f"configs/synthetic_pose.py takes 'small' or 'tiny', got {arg!r}")
  settings = {}  # "small": pose_train.POSE_SETTINGS (1,500 steps of 32 frames)
  if arg == "tiny":
    settings = dict(batch_size=8, num_steps=3, frames_per_video=2, held_out_videos=2,
                    held_out_frames=2, log_every=1)  # fmt: skip
  return pose_task_config(synthetic.get_config(arg), **settings)
