"""MMFA on VoxCeleb at 256 x 256 (vox-256 numbers of the reference, architecture.md 3).

Use: ``python -m mmfa_jax.main --config=configs/vox.py --workdir=DIR
--config.data.root=VOX --config.pretrained.hopenet=... --config.pretrained.vgg19=...
--config.pretrained.vggface=...``, or ``configs.vox.get_config()`` from Python. Override any field
on the command line (``--config.model.num_kp=20``, ``--config.train.dtype=bfloat16``).
"""

from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The vox-256 experiment."""
  config = ml_collections.ConfigDict()
  config.image_size = 256
  config.image_channels = 3

  # Data (mmfa_jax.data): "folders" (ROOT/{train,test} of videos or frame folders), "arrayrecord"
  # (built by tools/build_dataset.py) or "synthetic" (built-in heads). Batch size is global.
  config.data = ml_collections.ConfigDict(
    dict(
      source="folders",
      root=ml_collections.config_dict.placeholder(str),
      id_sampling=True,
      batch_size=32,
      worker_count=8,
      augment=True,
      synthetic=dict(seed=0, num_videos=256, num_frames=64),
    )
  )

  config.model = ml_collections.ConfigDict()
  config.model.variant = "mmfa"  # or "face_vid2vid" (HEEstimator pose and expression)
  config.model.num_kp = 15
  config.model.feature_channels = 32

  config.model.kp_detector = ml_collections.ConfigDict(
    dict(
      temperature=0.1,
      block_expansion=32,
      max_features=1024,
      scale_factor=0.25,
      num_blocks=5,
      reshape_channels=16384,
      reshape_depth=16,
    )
  )
  config.model.he_estimator = ml_collections.ConfigDict(
    dict(block_expansion=64, widths=(256, 512, 1024, 2048), blocks=(3, 3, 5, 2), num_bins=66)
  )
  # MMFA's motion heads (mmfa_delta.md 2-5).
  config.model.hopenet = ml_collections.ConfigDict(
    dict(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512))
  )
  # translation: "pooled" (fc_t on the pooled trunk features, mmfa_delta 3) or "heatmap" (x, y
  # also from the soft-argmax of a map over the trunk's stage `heatmap_stage`: follows the head);
  # scale: "pooled" (exp of fc_scale, mmfa_delta 3) or "heatmap" (times the spread of a second map
  # over that stage, relative to a uniform map's: follows the head's size).
  config.model.scale_translation = ml_collections.ConfigDict(
    dict(
      block_expansion=64,
      widths=(256, 512, 1024, 2048),
      blocks=(3, 3, 5, 2),
      translation="pooled",
      scale="pooled",
      heatmap_stage=1,
    )
  )
  config.model.expression_encoder = ml_collections.ConfigDict(
    dict(stem_features=64, widths=(256, 512), latent_dim=128)
  )
  config.model.expression_decoder = ml_collections.ConfigDict(dict(hidden=(256, 256, 256)))
  # "hopenet": rotation from the frozen pretrained Hopenet; "learned": a Hopenet-shaped network
  # trained from scratch (no pretrained weights needed).
  config.model.pose_network = "hopenet"
  # "canonical": s R (x_c + delta) + t; "posed": s (R x_c + delta) + t.
  config.model.deformation_frame = "canonical"
  config.model.generator = ml_collections.ConfigDict(
    dict(
      kind="multiscale",  # MMFA; "spade" (released face-vid2vid) or "original"
      block_expansion=64,
      max_features=512,
      num_down_blocks=2,
      reshape_channels=32,
      reshape_depth=16,
      num_resblocks=6,
      estimate_occlusion_map=True,
    )
  )
  config.model.dense_motion = ml_collections.ConfigDict(
    dict(
      block_expansion=32,
      max_features=1024,
      num_blocks=5,
      compress=4,
      kp_variance=0.01,
      mask_logit_scale=1.0,  # 1 in the reference; below 1 the mask moves between slots more slowly
    )
  )
  config.model.discriminator = ml_collections.ConfigDict(
    dict(scales=(1.0,), block_expansion=32, max_features=512, num_blocks=4, spectral_norm=True)
  )
  config.model.expression_vae = ml_collections.ConfigDict(
    dict(feature_dim=128, latent_dim=32, hidden=(256, 256))
  )

  # Converted frozen networks (tools/convert_torch_weights.py): directories, required for training.
  config.pretrained = ml_collections.ConfigDict(
    dict(
      hopenet=ml_collections.config_dict.placeholder(str),
      vgg19=ml_collections.config_dict.placeholder(str),
      vggface=ml_collections.config_dict.placeholder(str),
    )
  )

  # Random TPS warp of the equivariance loss (architecture.md 9.2) and perceptual pyramid scales.
  config.transform = ml_collections.ConfigDict(
    dict(sigma_affine=0.05, sigma_tps=0.005, points_tps=5)
  )
  config.perceptual_scales = (1.0, 0.5, 0.25, 0.125)

  # The objective (mmfa_delta.md 7-13): each weight multiplies one term of mmfa_jax.losses.
  config.loss = ml_collections.ConfigDict(
    dict(
      # "vgg19" (frozen, config.pretrained.vgg19) or "pixels" (L1 on the image pyramid itself,
      # for runs without pretrained weights; weight perceptual_layer_weights[0]).
      perceptual_features="vgg19",
      perceptual_layer_weights=(10.0, 10.0, 10.0, 10.0, 10.0),
      perceptual_min_size=32,  # each MMFA output's pyramid goes down to this size
      vggface=10.0,  # VGG-Face term on the full-size output; 0 disables it
      gan_mode="ls",
      generator_gan=1.0,
      discriminator_gan=1.0,
      feature_matching=(10.0, 10.0, 10.0, 10.0),
      equivariance=10.0,
      keypoint_prior=10.0,
      keypoint_distance=0.1,
      keypoint_depth=0.33,
      deformation_prior=5.0,
      representation=1.0,  # self-supervised cosine loss on A(I_d)
      identity=10.0,  # canonical keypoint consistency
      landmark=0.0,  # needs a frozen landmark network (mmfa_jax.train.LandmarkNetwork)
      headpose=0.0,  # face-vid2vid only: HEEstimator angles against Hopenet, degrees
      similarity=dict(max_rotation=15.0, scale_range=(0.9, 1.1), max_translation=0.1),
    )
  )
  # Adam with the reference's betas and learning rate; x0.1 at 60% of training (MultiStepLR).
  config.optim = ml_collections.ConfigDict(
    dict(
      learning_rate=2e-4,
      discriminator_learning_rate=2e-4,
      b1=0.5,
      b2=0.999,
      eps=1e-8,  # Adam's epsilon (PyTorch's default, as the reference)
      decay_at=(0.6,),  # fractions of train.num_steps
      decay=0.1,
      # Linear warm-up over the first updates (0: none, as the reference): Adam's first steps move
      # every weight by about the learning rate, which can saturate the dense motion's mask.
      warmup_steps=0,
      clip_norm=ml_collections.config_dict.placeholder(float),
      # Decay of the generator side's parameter average (0: none, as the reference; e.g. 0.995):
      # evaluations, checkpoints' inference and exports then use the average (TrainState).
      ema_decay=0.0,
      # (prefix, factor) pairs: the generator-side parameters under a '/'-separated prefix (e.g.
      # "image_generator") train at the learning rate times factor (none: the reference).
      learning_rate_multipliers=(),
    )
  )
  config.train = ml_collections.ConfigDict(
    dict(
      seed=0,
      num_steps=300_000,
      stop_after_steps=ml_collections.config_dict.placeholder(int),  # end this run early
      dtype="float32",  # compute dtype: "float32" or "bfloat16" (parameters stay float32)
      num_devices=0,  # 0: every device of every process
      log_every=100,
      sample_every=2000,
      checkpoint_every=2000,
      keep_checkpoints=3,
      async_checkpoints=True,
      progress_bar=True,
      # "auto": on the CPU the first steps run a quickly compiled program while the optimized one
      # compiles beside them (mmfa_jax/traced_steps.py); "on" / "off" choose on any platform.
      tiered_compilation="auto",
    )
  )
  # Evaluation during training (mmfa_jax/evaluators.py): name -> evaluator; every_steps 0 is off.
  # On VoxCeleb: --config.evals.test.every_steps=10000 --config.evals.test.data=ROOT (ROOT/test).
  config.evals = ml_collections.ConfigDict(
    dict(
      test=dict(
        every_steps=0,
        data="synthetic",
        protocol="reconstruction",
        num_videos=8,
        max_frames=32,
        metrics=("l1", "psnr", "ssim"),
        batch_size=8,
      )
    )
  )
  return config
