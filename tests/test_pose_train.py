"""configs/synthetic_pose.py: Hopenet's loss by hand and against PyTorch, and a tiny run whose
converted directory an MMFA model reads as its frozen pose network."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import synthetic, synthetic_pose
from mmfa_jax import pose_train
from mmfa_jax.checkpoints import load_converted
from mmfa_jax.data.synthetic import HELD_OUT_SEED
from mmfa_jax.landmark_train import LANDMARK_SETTINGS, landmark_task_config
from mmfa_jax.models.hopenet import prepare_hopenet_input
from mmfa_jax.models.variants import variant_from_config


def test_angle_bins_are_hopenets_digitize():
  degrees = np.array([-120.0, -99.0, -97.0, -96.0, 0.0, 1.4, 98.9, 99.0, 150.0], np.float32)
  edges = np.arange(-99, 102, 3)
  want = np.clip(np.digitize(degrees, edges) - 1, 0, 65)
  np.testing.assert_array_equal(pose_train.angle_bins(jnp.asarray(degrees)), want)


def test_pose_loss_equals_cross_entropy_plus_expectation_error_in_torch():
  rng = np.random.default_rng(0)
  logits = {k: rng.normal(size=(4, 66)).astype(np.float32) for k in pose_train.ANGLES}
  angles = rng.uniform(-60, 60, size=(4, 3)).astype(np.float32)
  got, terms = pose_train.pose_loss({k: jnp.asarray(v) for k, v in logits.items()}, angles, 0.1)
  want = 0.0
  for index, name in enumerate(pose_train.ANGLES):
    scores = torch.from_numpy(logits[name])
    target = torch.from_numpy(angles[:, index])
    labels = torch.clamp(torch.floor((target + 99) / 3).long(), 0, 65)
    expected = (torch.softmax(scores, -1) * torch.arange(66.0)).sum(-1) * 3 - 99
    error = torch.mean((expected - target) ** 2)
    want += torch.nn.functional.cross_entropy(scores, labels) + 0.1 * error
    assert float(terms[f"{name}_rmse_deg"]) == pytest.approx(float(error.sqrt()), rel=1e-5)
  assert float(got) == pytest.approx(float(want), rel=1e-5)


def test_tiny_run_writes_a_hopenet_an_mmfa_model_reads(tmp_path):
  config = synthetic_pose.get_config("tiny")
  result = pose_train.train_pose_network(config, str(tmp_path / "pose"))
  assert result["steps"] == 3 and result["held_out_frames"] == 4
  errors = result["held_out_mean_abs_error_deg"]
  assert set(errors) == {"yaw", "pitch", "roll"} and all(np.isfinite(list(errors.values())))
  saved = json.loads((tmp_path / "pose" / "pose_metrics.json").read_text())
  assert saved["held_out_mean_abs_error_deg"] == errors
  records = [
    json.loads(line) for line in (tmp_path / "pose" / "metrics.jsonl").read_text().splitlines()
  ]
  assert [r["step"] for r in records] == [1, 2, 3] and all(
    np.isfinite(r["pose_loss"]) for r in records
  )

  # The directory is what config.pretrained.hopenet of the matching MMFA config takes.
  variables, metadata = load_converted(tmp_path / "pose" / "hopenet", "hopenet")
  assert metadata["trained_steps"] == 3
  mmfa = synthetic.get_config("tiny")
  mmfa.model.pose_network = "hopenet"
  variant = variant_from_config(mmfa.model)
  images = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(np.float32)
  pose = jax.jit(lambda v, x: variant.head_pose({"hopenet": v}, x))(variables, images)
  assert set(pose) == {"yaw", "pitch", "roll"} and pose["yaw"].shape == (2,)
  # The error it reports is that of the same frozen-mode network on the held-out frames.
  held, truth = pose_train.render_set(HELD_OUT_SEED, 2, 2, 64, 4)
  measured = jax.jit(lambda v, x: variant.head_pose({"hopenet": v}, x))(variables, held / 255.0)
  mae = float(np.mean(np.abs(np.asarray(measured["yaw"]) - truth[:, 0])))
  assert errors["yaw"] == pytest.approx(mae, abs=1e-3)
  # ... and on the same frames blurred (scipy's Gaussian, edges replicated), its blurred error.
  sigma = pose_train.BLURRED_HELD_OUT_SIGMA
  blurred = np.stack([_scipy_blur(frame / 255.0, sigma) for frame in held]).astype(np.float32)
  measured = jax.jit(lambda v, x: variant.head_pose({"hopenet": v}, x))(variables, blurred)
  mae = float(np.mean(np.abs(np.asarray(measured["yaw"]) - truth[:, 0])))
  assert saved["held_out_blurred_mean_abs_error_deg"]["yaw"] == pytest.approx(mae, abs=1e-3)
  assert saved["held_out_blur_sigma"] == sigma and metadata["training_blur"] == 0.0
  assert saved["max_angles"] == []  # the data's own amplitudes
  assert metadata["network"] == {"layers": [1] * 4, "widths": [8, 16, 32, 64]}


def _scipy_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  """``(H, W, C)`` blurred over H and W as ``ops.pyramid.gaussian_blur`` with the pose trainer's
  radius: scipy's Gaussian, truncated at that radius, edges replicated."""
  from scipy.ndimage import gaussian_filter

  radius = pose_train.blur_radius(sigma)
  return gaussian_filter(image, (sigma, sigma, 0), mode="nearest", truncate=radius / sigma)


@pytest.mark.parametrize("blur", [0.0, 1.5])
def test_training_step_sees_frames_blurred_by_a_uniform_sigma(blur):
  """The step's loss is Hopenet's loss of the network on the frames blurred by scipy's Gaussian of
  the per-frame sigmas drawn uniform in [0, blur] (from the seed and the step number)."""
  config = synthetic_pose.get_config("tiny")
  config.pose.blur = blur
  trainer = pose_train.PoseTrainer(config)
  state = trainer.init_state(0)
  images, angles = pose_train.render_set(HELD_OUT_SEED, 2, 2, 64, 4)  # (4, 64, 64, 3) uint8
  frames = images / 255.0
  if blur:
    key = jax.random.fold_in(jax.random.key(config.pose.seed), 0)
    sigmas = np.asarray(jax.random.uniform(key, (4,), maxval=blur))
    assert 0 < sigmas.min() and sigmas.max() < blur and np.ptp(sigmas) > 0.1
    frames = np.stack([_scipy_blur(f, s) for f, s in zip(frames, sigmas, strict=True)])
  logits = trainer.network.apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    prepare_hopenet_input(jnp.asarray(frames, jnp.float32)), True, mutable=["batch_stats"],
  )[0]  # fmt: skip
  want, _ = pose_train.pose_loss(logits, jnp.asarray(angles), config.pose.alpha)
  _, metrics = trainer.step(state, images, angles)
  assert float(metrics["pose_loss"]) == pytest.approx(float(want), rel=1e-4)


def test_mmfa_run_pretrains_its_frozen_pose_network_once(tmp_path):
  config = synthetic.get_config("tiny")
  config.model.pose_network = "hopenet"
  config.pose_pretraining = dict(
    batch_size=4, num_steps=2, frames_per_video=2, held_out_videos=2, held_out_frames=2
  )
  pose_train.pretrain_pose_network(config, str(tmp_path))
  directory = tmp_path / pose_train.POSE_DIRECTORY
  assert config.pretrained.hopenet == str(directory / "hopenet")
  assert load_converted(directory / "hopenet", "hopenet")[1]["trained_steps"] == 2
  written = (directory / "pose_metrics.json").stat().st_mtime_ns

  resumed = synthetic.get_config("tiny")  # the same command again: found, not trained again
  resumed.model.pose_network = "hopenet"
  resumed.pose_pretraining = dict(config.pose_pretraining)
  pose_train.pretrain_pose_network(resumed, str(tmp_path))
  assert resumed.pretrained.hopenet == config.pretrained.hopenet
  assert (directory / "pose_metrics.json").stat().st_mtime_ns == written

  unchanged_learned, unchanged_given = (synthetic.get_config("tiny"), synthetic.get_config("tiny"))
  unchanged_given.model.pose_network = "hopenet"
  unchanged_given.pretrained.hopenet = "/elsewhere/hopenet"  # named: used as it is
  pose_train.pretrain_pose_network(unchanged_learned, str(tmp_path / "learned"))  # learned pose
  pose_train.pretrain_pose_network(unchanged_given, str(tmp_path / "given"))
  assert unchanged_learned.pretrained.hopenet is None
  assert unchanged_given.pretrained.hopenet == "/elsewhere/hopenet"
  assert not (tmp_path / "learned").exists() and not (tmp_path / "given").exists()


def test_held_out_errors_batches_and_scales_the_frames():
  """130 frames (three batches of at most 64): the prediction sees [0, 1] frames; the errors are
  |prediction - target| per sample, in order."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (130, 4, 4, 3), dtype=np.uint8)
  targets = rng.normal(size=(130, 2))
  seen = []

  def predict(frames):
    seen.append(len(frames))
    assert frames.dtype == np.float32 and frames.max() <= 1.0
    return np.stack([frames.mean((1, 2, 3)), frames[:, 0, 0, 0]], -1)

  got = pose_train.held_out_errors(predict, images, targets)
  frames = images.astype(np.float64) / 255.0
  want = np.abs(np.stack([frames.mean((1, 2, 3)), frames[:, 0, 0, 0]], -1) - targets)
  np.testing.assert_allclose(got, want, atol=1e-6)
  assert seen == [64, 64, 2]


def test_task_configs_take_the_base_configs_network_and_settings():
  base = synthetic.get_config("tiny")
  pose = pose_train.pose_task_config(base, num_steps=7)
  assert (pose.task, pose.pose.num_steps, pose.pose.alpha) == ("pose_network", 7, 0.1)
  assert dict(pose.model.hopenet) == dict(base.model.hopenet)
  landmarks = landmark_task_config(base, blur=0.5)
  assert (landmarks.task, landmarks.landmarks.blur) == ("landmarks", 0.5)
  assert landmarks.landmarks.num_steps == LANDMARK_SETTINGS["num_steps"]
  assert dict(landmarks.model.landmarks) == dict(base.model.landmarks)
  assert landmarks.image_size == pose.image_size == base.image_size
  # configs/synthetic_pose.py:reader: the README job's pose network on blurred frames, 800 steps.
  reader, small = synthetic_pose.get_config("reader"), synthetic_pose.get_config()
  assert (reader.pose.blur, tuple(reader.pose.max_angles), reader.pose.num_steps) == (2.0, (), 800)
  assert (small.pose.blur, tuple(small.pose.max_angles)) == (0.0, ())
  assert dict(reader.model.hopenet) == dict(small.model.hopenet) != dict(base.model.hopenet)
  with pytest.raises(ValueError, match="'small', 'reader' or 'tiny'"):
    synthetic_pose.get_config("bench")


def test_render_set_takes_wider_pose_amplitudes():
  """max_angles sets the (yaw, pitch, roll) amplitudes of the rendered poses: the same waves,
  scaled (the default is the data's 35, 20, 15 degrees)."""
  _, default = pose_train.render_set(HELD_OUT_SEED, 2, 4, 16, 8)
  _, wide = pose_train.render_set(HELD_OUT_SEED, 2, 4, 16, 8, max_angles=(70.0, 30.0, 45.0))
  np.testing.assert_allclose(wide, default * np.array([2.0, 1.5, 3.0]), rtol=1e-5, atol=1e-4)
  assert np.abs(wide[:, 0]).max() > 35.0
  with pytest.raises(ValueError, match=r"max_angles takes \(yaw, pitch, roll\)"):
    pose_train.render_set(HELD_OUT_SEED, 1, 1, 16, max_angles=(60.0,))
