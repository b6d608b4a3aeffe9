"""The face-vid2vid baseline on VoxCeleb 256 (the reference's vox-256.yaml model, SPADE generator).

Converted reference checkpoints (``tools/convert_torch_weights.py face_vid2vid``) belong to this
config; ``--config.model.generator.kind=original`` for the Vox-256-Beta-style original generator.
Training uses the reference's objective (architecture.md 9): VGG19 pyramid on the single output,
hinge GAN + feature matching, equivariance with the source's canonical keypoints, keypoint prior,
head-pose loss against the frozen Hopenet (degrees, weight 20) and the expression prior (weight 5).
"""

from __future__ import annotations

import ml_collections

from configs import vox


def get_config() -> ml_collections.ConfigDict:
  config = vox.get_config()
  config.model.variant = "face_vid2vid"
  config.model.generator.kind = "spade"
  config.loss.update(
    dict(gan_mode="hinge", vggface=0.0, representation=0.0, identity=0.0, headpose=20.0)
  )
  return config
