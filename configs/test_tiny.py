"""Tiny widths and 64 px images, for tests: every network of vox.py at a fraction of the size."""

from __future__ import annotations

import ml_collections

from configs import vox


def get_config(variant: str = "mmfa") -> ml_collections.ConfigDict:
  """``variant``: "mmfa" (multi-scale generator) or "face_vid2vid" (SPADE generator)."""
  config = vox.get_config()
  config.image_size = 64
  model = config.model
  model.variant = variant
  model.num_kp = 3
  model.feature_channels = 8
  model.kp_detector.update(
    dict(block_expansion=8, max_features=64, num_blocks=3, reshape_channels=128, reshape_depth=4)
  )
  model.he_estimator.update(dict(block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)))
  model.hopenet.update(dict(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64)))
  model.scale_translation.update(
    dict(block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1))
  )
  model.expression_encoder.update(dict(stem_features=8, widths=(16, 32), latent_dim=12))
  model.expression_decoder.update(dict(hidden=(16,)))
  model.generator.update(
    dict(
      kind="multiscale" if variant == "mmfa" else "spade",
      block_expansion=8,
      max_features=32,
      reshape_channels=8,
      reshape_depth=4,
      num_resblocks=2,
    )
  )
  model.dense_motion.update(dict(block_expansion=8, max_features=32, num_blocks=2))
  model.discriminator.update(dict(block_expansion=8, max_features=64))
  model.expression_vae.update(dict(feature_dim=12, latent_dim=4, hidden=(16, 16)))
  return config
