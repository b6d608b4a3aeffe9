"""MMFA on the built-in synthetic talking heads: no data set and no pretrained weights needed.

The README's main job: ``python -m mmfa_jax.main --config=configs/synthetic.py --workdir=DIR``
(64 x 64 frames, small widths) first pretrains its frozen pose network on the heads' true angles
(WORKDIR/pose_network, ``mmfa_jax/pose_train.py``), then trains MMFA with it, as vox.py uses the
frozen Hopenet. What else differs from ``vox.py``: the perceptual loss compares the image
pyramids themselves (``loss.perceptual_features='pixels'``, no VGG19 / VGG-Face), and the GAN
terms are off (README, "Learning on the synthetic heads": on these heads they did not raise PSNR
within 300 steps and lowered it by 1 dB at 1,100, drawing a checkerboard texture; without them
the discriminator is not trained at all, which also makes the step quicker to compile and run).
Every other loss term of MMFA is on but the landmark loss: ``--config.loss.landmark=10`` adds it
with a detector pretrained on the heads' true face points by the same command
(``configs/synthetic_landmarks.py``; off by default, see below). ``--config.loss.generator_gan=1
'--config.loss.feature_matching=(10,10,10,10)'`` turns the GAN terms back on;
``--config.model.pose_network=learned`` learns the pose from scratch. The scale/translation head
reads x and y from a soft-argmax map (``model.scale_translation.translation='heatmap'``; vox.py keeps
MMFA's pooled head): pooled, its translation learned nothing on these heads (README, "A translation
that follows the head").

``:bench`` is the same networks trained longer: the run that should show learning within 45
minutes on a 2-core CPU (pose pretraining included). ``:tiny`` is the smallest widths, for tests
(pose learned from scratch, every loss term on, the GAN's included). ``:tiny:mmfa`` and ``:tiny:face_vid2vid`` are the tiny networks, a
few narrower still, on vox.py's set-up instead (the frozen pretrained Hopenet, VoxCeleb data): the
model variant MMFA (multi-scale generator) or face-vid2vid (SPADE generator), for the tests that
build models and compare them with their PyTorch twins (``tools/convert_torch_weights.py
face_vid2vid --config=configs/synthetic.py:tiny:face_vid2vid`` converts a checkpoint of that size).
"""

from __future__ import annotations

import ml_collections

from configs import vox

VARIANTS = ("mmfa", "face_vid2vid")  # of "tiny:VARIANT"
POSE_PRETRAINING_STEPS = 400  # of 32 frames: about 6 minutes on a 2-core CPU
LANDMARK_PRETRAINING_STEPS = 600  # of 32 frames
# Landmark-loss weight of each data.synthetic.FACE_POINTS point (mmfa_delta 10: eyes and brows 2,
# mouth 2, the rest 1): pupils, brows, nose, mouth corners and centre, chin, forehead.
LANDMARK_POINT_WEIGHTS = (2.0, 2.0, 2.0, 2.0, 1.0, 2.0, 2.0, 2.0, 1.0, 1.0)


def get_config(arg: str = "small") -> ml_collections.ConfigDict:
  """``arg``: "small" (the README job), "bench" (the 45-minute run), "tiny" (tests: seconds per
  step on a CPU) or "tiny:mmfa" / "tiny:face_vid2vid" (the module docstring)."""
  if arg == "bench":
    return _bench(get_config("small"))
  size, colon, variant = arg.partition(":")
  if size not in ("small", "tiny") or (colon and (size != "tiny" or variant not in VARIANTS)):
    raise ValueError(
      "configs/synthetic.py takes 'small', 'bench' or 'tiny' (or 'tiny:mmfa', 'tiny:face_vid2vid'), "
      f"got {arg!r}"
    )
  if colon:
    return _tiny_networks_on_vox(variant)
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
  # The frozen pose network, as vox uses Hopenet: pretrained on the synthetic heads' true angles
  # by the same command first (WORKDIR/pose_network; mmfa_jax/pose_train.py), unless
  # --config.pretrained.hopenet names one. The tests' tiny size learns its pose from scratch
  # (--config.model.pose_network=learned does that at any size).
  model.pose_network = "learned" if tiny else "hopenet"
  config.pose_pretraining = dict(num_steps=POSE_PRETRAINING_STEPS)
  _networks(model, tiny)

  # The frozen landmark detector of MMFA's landmark loss (eq. 9). The term is off here: on these
  # heads it lowered AKD by 0.6-0.8 px and PSNR by 0.2-0.3 dB in 300 steps (README, "Learning on
  # the synthetic heads"). --config.loss.landmark=10 turns it on; the same command then first
  # pretrains the detector on the heads' true face points (WORKDIR/landmark_network,
  # mmfa_jax/landmark_train.py) unless --config.pretrained.landmarks names one.
  model.landmarks = dict(
    point_weights=LANDMARK_POINT_WEIGHTS, input_size=64, block_expansion=16, max_features=128,
    down_blocks=3, up_blocks=2,
  )  # fmt: skip
  config.pretrained.landmarks = ml_collections.config_dict.placeholder(str)
  config.landmark_pretraining = dict(num_steps=LANDMARK_PRETRAINING_STEPS)

  config.loss.update(dict(perceptual_features="pixels", vggface=0.0, perceptual_min_size=16))
  config.loss.landmark = 0.0
  if not tiny:  # the tests' tiny size keeps every term of MMFA's objective
    config.loss.update(dict(generator_gan=0.0, feature_matching=(0.0, 0.0, 0.0, 0.0)))
  config.optim.update(dict(learning_rate=5e-4, discriminator_learning_rate=5e-4, decay_at=(0.8,)))
  # The README job evaluates and infers with a moving average of the parameters: after its 200
  # steps it scored 0.32 / 0.40 dB above the same run's last parameters (reconstruction /
  # cross-identity; README, "A parameter average"). :bench turns it off.
  config.optim.ema_decay = 0.0 if tiny else 0.995
  config.train.update(
    dict(
      num_steps=20 if tiny else 200,  # small: ~2.4 s/step + ~2 min compiling on a 2-core CPU
      log_every=5 if tiny else 10,
      sample_every=10 if tiny else 50,
      checkpoint_every=10 if tiny else 50,
      keep_checkpoints=2,
    )
  )
  # Held-out synthetic heads, reconstruction: every 100 steps of the README job (off for tests).
  config.evals.test.update(dict(every_steps=0 if tiny else 100, num_videos=4, max_frames=8))
  return config


def _bench(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The README job's networks, trained longer: the pose network twice as long (800 steps, about
  11 minutes on the 2-core CPU), then 1,400 MMFA steps (about 1.2 s each; 30 minutes with the
  compilation and the evaluations every 350): 41 minutes in all, within the 45-minute budget, the
  learning rate divided by ten for the last fifth. 1,100 steps scored 0.3 dB lower in both
  protocols; Adam's b1=0.9 or the drop at half the steps, lower still (README, "Optimizer
  settings tried"). Its last parameters, after the learning-rate drop, scored as well as their
  moving average (0.07 / 0.13 dB higher in one run), so it keeps no average (``ema_decay=0``)."""
  config.pose_pretraining.num_steps = 800
  config.optim.ema_decay = 0.0
  config.train.update(
    dict(num_steps=1400, log_every=25, sample_every=350, checkpoint_every=350, keep_checkpoints=2)
  )
  config.evals.test.every_steps = 350
  return config


def _networks(model: ml_collections.ConfigDict, tiny: bool) -> None:
  """The network widths of "small" or "tiny" (MMFA's networks; the generator multi-scale)."""
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
    dict(
      block_expansion=8 * w,
      widths=(16 * w, 32 * w, 64 * w, 128 * w),
      blocks=(1, 1, 1, 1),
      translation="heatmap",  # 8 x 8 map at 64 px (stage 1)
    )
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


def _tiny_networks_on_vox(variant: str) -> ml_collections.ConfigDict:
  """vox.py with the tiny networks, the generator, dense motion and expression networks narrower
  still, and face-vid2vid's HEEstimator tiny as well (``variant``: "mmfa" or "face_vid2vid")."""
  config = vox.get_config()
  config.image_size = 64
  config.perceptual_scales = (1.0, 0.5, 0.25)  # 64..16 px: VGG19's deepest layer needs 16
  model = config.model
  model.variant = variant
  _networks(model, tiny=True)
  model.feature_channels = 8
  model.he_estimator.update(dict(block_expansion=8, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1)))
  model.expression_encoder.latent_dim = 12
  model.expression_decoder.hidden = (16,)
  model.generator.update(
    dict(kind="multiscale" if variant == "mmfa" else "spade", block_expansion=8, max_features=32)
  )
  model.dense_motion.max_features = 32
  model.expression_vae.update(dict(feature_dim=12, hidden=(16, 16)))
  return config
