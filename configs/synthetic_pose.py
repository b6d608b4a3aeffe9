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


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """``arg``: "small" (the network of configs/synthetic.py) or "tiny" (tests)."""
  if arg not in ("small", "tiny"):
    raise ValueError(f"configs/synthetic_pose.py takes 'small' or 'tiny', got {arg!r}")
  tiny = arg == "tiny"
  base = synthetic.get_config(arg)
  config = ml_collections.ConfigDict()
  config.task = "pose_network"
  config.image_size = base.image_size
  config.model = ml_collections.ConfigDict(dict(hopenet=dict(base.model.hopenet)))
  config.data = ml_collections.ConfigDict(
    dict(source="synthetic", synthetic=dict(base.data.synthetic))
  )
  config.pose = ml_collections.ConfigDict(
    dict(
      seed=0,
      batch_size=8 if tiny else 32,
      num_steps=3 if tiny else 1500,
      learning_rate=1e-3,
      decay_at=(0.7,),  # fractions of num_steps: learning rate x0.1 from there
      alpha=0.1,  # weight of the squared expectation error (degrees^2) beside the bin cross-entropy
      frames_per_video=2 if tiny else 32,  # rendered once; batches are drawn from them
      held_out_videos=2 if tiny else 16,
      held_out_frames=2 if tiny else 8,
      log_every=1 if tiny else 50,
    )
  )
  return config
