"""The landmark detector of MMFA's landmark loss: soft argmax and the pixel-centre convention by
hand, the training blur against scipy, a tiny ``configs/synthetic_landmarks.py`` run whose
directory an MMFA config loads, its pretraining hook, and the objective building it from the
config."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic, synthetic_landmarks
from mmfa_jax import landmark_train
from mmfa_jax.checkpoints import ConvertedWeightsError, load_converted, load_pretrained
from mmfa_jax.data.synthetic import FACE_POINTS, HELD_OUT_SEED, SyntheticHeads, face_points
from mmfa_jax.models.landmarks import DETECTOR_SETTINGS, FrozenLandmarks, LandmarkDetector
from mmfa_jax.objective import Networks, required_pretrained
from mmfa_jax.ops.grid_sample import make_coordinate_grid
from mmfa_jax.ops.keypoints import soft_argmax
from mmfa_jax.pose_train import render_set


def test_soft_argmax_of_a_peak_and_of_flat_maps():
  grid = make_coordinate_grid((3, 4))  # (3, 4, 2): x over 4 columns, y over 3 rows
  logits = np.zeros((1, 3, 4, 2), np.float32)
  logits[0, 2, 1, 0] = 60.0  # keypoint 0: row 2, column 1; keypoint 1: flat
  points, heatmap = soft_argmax(jnp.asarray(logits), grid)
  np.testing.assert_allclose(points[0, 0], [-1 + 2 / 3, 1.0], atol=1e-6)  # x = -1/3, y = 1
  np.testing.assert_allclose(points[0, 1], [0.0, 0.0], atol=1e-6)  # the grid's mean
  np.testing.assert_allclose(heatmap[0, ..., 1], np.full((3, 4), 1 / 12), rtol=1e-6)
  assert heatmap.shape == (1, 3, 4, 2)


def test_detector_shapes_range_and_input_checks():
  detector = LandmarkDetector(num_points=5, input_size=32, block_expansion=4, max_features=8)
  images = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
  variables = detector.init(jax.random.key(1), images)
  out = detector.apply(variables, images)
  assert out["value"].shape == (2, 5, 2)
  assert out["heatmap"].shape == (2, 16, 16, 5)  # 32 px, three halvings, two doublings
  np.testing.assert_allclose(out["heatmap"].sum(axis=(1, 2)), 1.0, rtol=1e-5)
  # Inside the outermost pixel centres of the 16 x 16 heatmap.
  assert np.all(np.abs(out["value"]) <= 1 - 1 / 16 + 1e-6)
  with pytest.raises(ValueError, match="multiple of input_size 32"):
    detector.apply(variables, images[:, :48, :48])


def test_face_landmarks_are_the_true_face_points_in_the_image_plane():
  heads = SyntheticHeads(seed=4, num_videos=2, num_frames=8)
  got = landmark_train.face_landmarks(heads, 1, 5)
  want = face_points(heads.identity(1), heads.motion(1, 5))[:, :2]
  assert got.shape == (len(FACE_POINTS), 2)
  np.testing.assert_array_equal(got, want)


def test_tiny_run_writes_a_detector_an_mmfa_config_loads(tmp_path):
  config = synthetic_landmarks.get_config("tiny")
  result = landmark_train.train_landmark_network(config, str(tmp_path / "lm"))
  assert result["steps"] == 3 and result["held_out_frames"] == 4
  saved = json.loads((tmp_path / "lm" / "landmark_metrics.json").read_text())
  assert saved["held_out_mean_error_px"] == result["held_out_mean_error_px"]
  records = [json.loads(x) for x in (tmp_path / "lm" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [1, 2, 3]
  assert all(r["landmark_error_px"] == pytest.approx(r["landmark_loss"] * 32) for r in records)

  # config.pretrained.landmarks of the matching MMFA config takes the directory.
  mmfa = synthetic.get_config("tiny")
  mmfa.model.landmarks.update(dict(config.model.landmarks))
  mmfa.loss.landmark = 10.0
  mmfa.pretrained.landmarks = str(tmp_path / "lm" / "landmarks")
  assert "landmarks" in required_pretrained(mmfa)
  variables = load_pretrained(mmfa.pretrained, ("landmarks",))["landmarks"]
  network = Networks.from_config(mmfa, None).landmarks
  assert isinstance(network, FrozenLandmarks)
  np.testing.assert_array_equal(network.point_weights, synthetic.LANDMARK_POINT_WEIGHTS)
  # The error it reports is the frozen-mode detector's on the held-out frames, by hand.
  held, truth = render_set(HELD_OUT_SEED, 2, 2, 64, 4, landmark_train.face_landmarks)
  predicted = np.asarray(jax.jit(network.apply)(variables, held / 255.0))
  assert result["held_out_mean_error_px"] == pytest.approx(
    np.abs(predicted - truth).mean() * 32, rel=1e-4
  )
  metadata = load_converted(mmfa.pretrained.landmarks, "landmarks")[1]
  assert metadata["trained_steps"] == 3
  rebuilt = FrozenLandmarks.from_metadata(metadata)  # what evaluate --landmarks reads
  for field in (*DETECTOR_SETTINGS, "num_points"):
    assert getattr(rebuilt.detector, field) == getattr(network.detector, field), field
  np.testing.assert_array_equal(rebuilt.point_weights, network.point_weights)

  mmfa.pretrained.landmarks = None
  with pytest.raises(ConvertedWeightsError, match=r"configs/synthetic_landmarks\.py"):
    load_pretrained(mmfa.pretrained, ("landmarks",))


def test_mmfa_run_pretrains_its_landmark_detector_once_and_only_with_the_term_on(tmp_path):
  def tiny(landmark):
    config = synthetic.get_config("tiny")
    config.model.landmarks.update(dict(block_expansion=4, max_features=16))
    config.loss.landmark = landmark
    config.landmark_pretraining = dict(
      batch_size=4, num_steps=2, frames_per_video=2, held_out_videos=2, held_out_frames=2
    )
    return config

  config = tiny(10.0)
  landmark_train.pretrain_landmark_network(config, str(tmp_path))
  directory = tmp_path / landmark_train.LANDMARK_DIRECTORY
  assert config.pretrained.landmarks == str(directory / "landmarks")
  written = (directory / "landmark_metrics.json").stat().st_mtime_ns
  resumed = tiny(10.0)  # the same command again: found, not trained again
  landmark_train.pretrain_landmark_network(resumed, str(tmp_path))
  assert resumed.pretrained.landmarks == config.pretrained.landmarks
  assert (directory / "landmark_metrics.json").stat().st_mtime_ns == written

  off = tiny(0.0)
  landmark_train.pretrain_landmark_network(off, str(tmp_path / "off"))
  assert off.pretrained.landmarks is None and not (tmp_path / "off").exists()
  assert "landmarks" not in required_pretrained(off)
