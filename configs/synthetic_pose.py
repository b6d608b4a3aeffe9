"""Pretraining the pose network for the synthetic world (``mmfa_jax/pose_train.py``).

    python -m mmfa_jax.main --config=configs/synthetic_pose.py --workdir=runs/synthetic_pose

The Hopenet-shaped network at the widths of ``configs/synthetic.py`` learns yaw, pitch and roll
from the synthetic training heads against their ground truth; ``runs/synthetic_pose/hopenet`` is
then what ``--config.pretrained.hopenet`` of an MMFA config with ``model.pose_network='hopenet'``
takes (the frozen pose network, exactly as vox uses Hopenet). ``:tiny`` is the tests' size.

``:reader`` is the same network trained to read generated frames, for ``python -m
mmfa_jax.evaluate --pose-network DIR/hopenet``: its training frames are blurred (sigma uniform in
[0, 2] pixels). A network trained on sharp frames reads no turn on a generator's blurred heads
(README, "Reading the pose edits"). Wider poses (``--config.pose.max_angles=(60,40,40)``, so that
the targets of +-20 degree edits are within what it learned) left it at 18-25 degrees of error
after the same 800 steps, so the reader keeps the data's.
"""

from __future__ import annotations

import ml_collections

from configs import synthetic
from mmfa_jax.pose_train import pose_task_config

READER_SETTINGS = dict(num_steps=800, blur=2.0)


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """``arg``: "small" (the network of configs/synthetic.py), "reader" (the same network, a reader
  of generated frames) or "tiny" (tests)."""
  if arg not in ("small", "reader", "tiny"):
    raise ValueError(f"configs/synthetic_pose.py takes 'small', 'reader' or 'tiny', got {arg!r}")
  settings = {}  # "small": pose_train.POSE_SETTINGS (1,500 steps of 32 frames)
  if arg == "reader":
    settings = dict(READER_SETTINGS)
  if arg == "tiny":
    settings = dict(batch_size=8, num_steps=3, frames_per_video=2, held_out_videos=2,
                    held_out_frames=2, log_every=1)  # fmt: skip
  return pose_task_config(synthetic.get_config("tiny" if arg == "tiny" else "small"), **settings)
