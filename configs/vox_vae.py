"""The expression VAE (mmfa_delta.md 14), trained after MMFA from its frozen expression encoder.

Use: ``python -m mmfa_jax.main --config=configs/vox_vae.py --workdir=VAE_DIR
--config.mmfa.workdir=MMFA_DIR --config.data.root=VOX``. The MMFA run's ``config.json`` and latest
checkpoint give the encoder (``--config.mmfa.step=N`` for another step) and the image size; the
frames come from ``config.data`` as for MMFA. ``--config=configs/vox_vae.py:synthetic`` trains on the
built-in synthetic heads (after the README's synthetic MMFA run).
"""

from __future__ import annotations

import ml_collections

from configs import vox


def get_config(data: str = "vox") -> ml_collections.ConfigDict:
  """``data``: "vox" (VoxCeleb frames, ``config.data.root``) or "synthetic" (built-in heads)."""
  if data not in ("vox", "synthetic"):
    raise ValueError(f"configs/vox_vae.py takes 'vox' or 'synthetic', got {data!r}")
  config = ml_collections.ConfigDict()
  config.task = "expression_vae"
  config.mmfa = ml_collections.ConfigDict(
    dict(
      workdir=ml_collections.config_dict.placeholder(str),  # the trained MMFA run (required)
      step=ml_collections.config_dict.placeholder(int),  # default: its latest checkpoint
    )
  )
  config.image_size = ml_collections.config_dict.placeholder(int)  # set from the MMFA run
  config.data = vox.get_config().data
  config.data.batch_size = 64  # pairs: 128 expression features per step

  # Encoder 128 -> 256 -> 256 -> (mu, log sigma^2) [32]; decoder 32 -> 256 -> 256 -> 128.
  # feature_dim comes from the MMFA run (model.expression_encoder.latent_dim).
  config.expression_vae = ml_collections.ConfigDict(dict(latent_dim=32, hidden=(256, 256)))
  config.latent_discriminator = ml_collections.ConfigDict(dict(hidden=(256, 256)))
  config.vae_loss = ml_collections.ConfigDict(
    dict(
      reconstruction=1.0,  # mean squared error on f_exp
      kl=1e-3,  # KL(q(z | f_exp) || N(0, I)), summed over latent dimensions
      kl_anneal=0.1,  # KL weight rises linearly from 0 over this fraction of train.num_steps
      adversarial=0.1,  # least-squares GAN on prior decodes and reconstructions
    )
  )
  config.optim = ml_collections.ConfigDict(
    dict(
      learning_rate=1e-4,
      discriminator_learning_rate=1e-4,
      b1=0.5,
      b2=0.999,
      eps=1e-8,  # Adam's epsilon (PyTorch's default, as the reference)
      decay_at=(),
      decay=0.1,
      clip_norm=ml_collections.config_dict.placeholder(float),
    )
  )
  config.train = ml_collections.ConfigDict(
    dict(
      seed=0,
      num_steps=50_000,
      stop_after_steps=ml_collections.config_dict.placeholder(int),
      num_devices=0,
      log_every=100,
      sample_every=0,  # the VAE writes no image grid
      checkpoint_every=5000,
      keep_checkpoints=3,
      async_checkpoints=True,
      progress_bar=True,
    )
  )
  if data == "synthetic":
    config.data.update(
      dict(source="synthetic", batch_size=16, worker_count=0, read_threads=2, prefetch=16)
    )
    config.data.synthetic = dict(seed=0, num_videos=64, num_frames=64)
    config.optim.update(dict(learning_rate=1e-3, discriminator_learning_rate=1e-3))
    config.train.update(dict(num_steps=400, log_every=50, checkpoint_every=200))
  return config
