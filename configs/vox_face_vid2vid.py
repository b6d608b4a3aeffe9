"""The face-vid2vid baseline on VoxCeleb 256 (the reference's vox-256.yaml model, SPADE generator).

Converted reference checkpoints (``tools/convert_torch_weights.py face_vid2vid``) belong to this
config; ``--config.model.generator.kind=original`` for the Vox-256-Beta-style original generator.
"""

from __future__ import annotations

import ml_collections

from configs import vox


def get_config() -> ml_collections.ConfigDict:
  config = vox.get_config()
  config.model.variant = "face_vid2vid"
  config.model.generator.kind = "spade"
  return config
