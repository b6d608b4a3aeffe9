"""MMFA on the built-in synthetic talking heads: no data set and no pretrained weights needed.

The README's main job: ``python -m mmfa_jax.main --config=configs/synthetic.py --workdir=DIR``
trains visibly on a 2-core CPU in about ten minutes (64 x 64 frames, small widths). What differs
from ``vox.py``: the rotation comes from a Hopenet-shaped network learned from scratch
(``model.pose_network='learned'``) instead of the frozen pretrained Hopenet, and the perceptual
loss compares the image pyramids themselves (``loss.perceptual_features='pixels'``, no VGG19 /
VGG-Face). Every other loss term of MMFA is on.

``--config=configs/synthetic.py:tiny`` is the same with the smallest widths, for tests.
"""

from __future__ import annotations

import ml_collections

from configs import vox


def get_config(size: str = "small") -> ml_collections.ConfigDict:
  """``size``: "small" (the README job) or "tiny" (tests: seconds per step on a CPU)."""
  if size not in ("small", "tiny"):
    raise ValueError(f"configs/synthetic.py takes 'small' or 'tiny', got {size!r}")
  tiny = size == "tiny"
  config = vox.get_config()
  config.image_size = 64
  config.data.update(
    dict(
      source="synthetic", batch_size=4 if tiny else 8, worker_count=0, read_threads=2, prefetch=16
    )
  )
  config.data.synthetic = dict(seed=0, num_videos=64, num_frames=64)

  model = config.model
  model.pose_network = "learned"
  model.num_kp = 3 if tiny else 10
  w = 1 if tiny else 2  # width multiplier
  model.kp_detector.update(
    dict(
      block_expansion=8 * w,
      max_features=64 * w,
      num_blocks=3,
      reshape_channels=128 * w,
      reshape_depth=4,
    )
  )
  model.hopenet.update(dict(layers=(1, 1, 1, 1), widths=(8 * w, 16 * w, 32 * w, 64 * w)))
  model.scale_translation.update(
    dict(block_expansion=8 * w, widths=(16 * w, 32 * w, 64 * w, 128 * w), blocks=(1, 1, 1, 1))
  )
  model.expression_encoder.update(dict(stem_features=8 * w, widths=(16 * w, 32 * w), latent_dim=16))
  model.expression_decoder.update(dict(hidden=(32 * w, 32 * w)))
  model.generator.update(
    dict(
      kind="multiscale",
      block_expansion=16 * w,
      max_features=64 * w,
      reshape_channels=8 * w,
      reshape_depth=4,
      num_resblocks=2,
    )
  )
  model.dense_motion.update(dict(block_expansion=8 * w, max_features=64 * w, num_blocks=2))
  model.discriminator.update(dict(block_expansion=8 * w, max_features=64 * w))
  model.expression_vae.update(dict(feature_dim=16, latent_dim=4, hidden=(32, 32)))

  config.loss.update(dict(perceptual_features="pixels", vggface=0.0, perceptual_min_size=16))
  config.optim.update(dict(learning_rate=5e-4, discriminator_learning_rate=5e-4, decay_at=(0.8,)))
  config.train.update(
    dict(
      num_steps=20 if tiny else 200,  # small: ~2.4 s/step + ~2 min compiling on a 2-core CPU
      log_every=5 if tiny else 10,
      sample_every=10 if tiny else 50,
      checkpoint_every=10 if tiny else 50,
      keep_checkpoints=2,
    )
  )
  return config
