"""Pretraining the landmark detector on the synthetic heads: ``configs/synthetic_landmarks.py``.

    python -m mmfa_jax.main --config=configs/synthetic_landmarks.py --workdir=runs/landmarks

MMFA's landmark loss (mmfa_delta 10) needs a pretrained, frozen 2D landmark detector. For the
synthetic world, ``models.landmarks.LandmarkDetector`` (``config.model.landmarks``) learns the
heads' ``data.synthetic.FACE_POINTS`` from synthetic frames against their true positions
(``data.synthetic.face_points``, x and y in [-1, 1] image units): L1 over points and coordinates,
Adam, a step decay. Its training frames are lightly blurred at random (``blur``), so it also reads
the softer frames a generator draws.

It writes ``WORKDIR/landmarks`` (a converted ``landmarks`` directory that
``config.pretrained.landmarks`` of an MMFA config and ``evaluate --landmarks`` take),
``WORKDIR/metrics.jsonl`` and ``WORKDIR/landmark_metrics.json`` with the mean landmark error in
pixels (at ``image_size``) on held-out heads. Minutes on a CPU; no checkpoints, a rerun starts
over.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from mmfa_jax.models.landmarks import LandmarkDetector, landmarks_from_config
from mmfa_jax.pose_train import (
  blur_at_random,
  fit,
  held_out_errors,
  pretrain_once,
  render_set,
  save_pretrained,
  synthetic_task_config,
)
from mmfa_jax.train_state import TrainState, apply_gradients, make_optimizer, step_schedule

LANDMARK_DIRECTORY = "landmark_network"  # WORKDIR/landmark_network of an MMFA run pretraining it

# Landmark-training settings (config.landmarks of configs/synthetic_landmarks.py,
# config.landmark_pretraining of configs/synthetic.py).
LANDMARK_SETTINGS = dict(
  seed=0,
  batch_size=32,
  num_steps=600,
  learning_rate=1e-3,
  decay_at=(0.7,),  # fractions of num_steps: learning rate x0.1 from there
  blur=1.0,  # Gaussian blur of each training frame, sigma uniform in [0, blur] pixels
  frames_per_video=32,
  held_out_videos=16,
  held_out_frames=8,
  log_every=50,
)


def landmark_task_config(
  base: ml_collections.ConfigDict, **settings: Any
) -> ml_collections.ConfigDict:
  """The landmark-detector task with ``model.landmarks`` of ``base``: ``LANDMARK_SETTINGS``
  updated with ``settings``."""
  return synthetic_task_config(
    base, "landmarks", "landmarks", "landmarks", LANDMARK_SETTINGS, **settings
  )


def face_landmarks(heads: Any, video: int, frame: int) -> np.ndarray:
  """``(P, 2)``: the true (x, y) of ``FACE_POINTS`` in one synthetic frame, [-1, 1] units."""
  from mmfa_jax.data.synthetic import face_points

  return face_points(heads.identity(video), heads.motion(video, frame))[:, :2]


class LandmarkTrainer:
  """The detector, its optimizer and the compiled step of a ``configs/synthetic_landmarks.py``
  config."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    settings = config.landmarks
    frozen = landmarks_from_config(config.model)  # as the MMFA objective runs it
    self.frozen = frozen
    self.network: LandmarkDetector = frozen.detector
    milestones = [round(f * settings.num_steps) for f in settings.decay_at]
    self.tx = make_optimizer(step_schedule(settings.learning_rate, milestones, 0.1))
    self.step = jax.jit(self._step, donate_argnums=0)
    self.predict = jax.jit(frozen.apply)

  def init_state(self, seed: int) -> TrainState:
    from mmfa_jax.initialization import init_variables

    size = self.config.image_size
    variables = init_variables(self.network, seed, np.zeros((1, size, size, 3), np.float32))
    return TrainState.create(variables["params"], variables["batch_stats"], self.tx)

  def _step(self, state: TrainState, images: jax.Array, points: jax.Array) -> tuple:
    settings = self.config.landmarks
    images = blur_at_random(
      images.astype(jnp.float32) / 255.0, settings.seed, state.step, settings.blur
    )

    def loss(params: Any) -> tuple[jax.Array, Any]:
      out, updated = self.network.apply(
        {"params": params, "batch_stats": state.batch_stats}, images, True, mutable=["batch_stats"]
      )
      return jnp.mean(jnp.abs(out["value"] - points)), updated["batch_stats"]

    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    state, skipped = apply_gradients(state, grads, stats, loss=value)
    pixels = value * self.config.image_size / 2
    return state, {"landmark_loss": value, "landmark_error_px": pixels, "skipped": skipped}

  def mean_error_px(self, variables: Any, images: np.ndarray, points: np.ndarray) -> float:
    """Mean absolute landmark error (pixels at ``image_size``, over x and y) of the frozen-mode
    network on ``images`` (uint8)."""
    error = held_out_errors(lambda frames: self.predict(variables, frames), images, points)
    return float(error.mean() * self.config.image_size / 2)


def train_landmark_network(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and writes the landmark detector (module docstring); returns
  ``landmark_metrics.json``."""
  from mmfa_jax.data.synthetic import HELD_OUT_SEED

  settings, size = config.landmarks, config.image_size
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  data = config.data.synthetic
  images, points = render_set(
    data.seed, data.num_videos, settings.frames_per_video, size, target=face_landmarks
  )
  held_images, held_points = render_set(
    HELD_OUT_SEED, settings.held_out_videos, settings.held_out_frames, size, 4, face_landmarks
  )
  trainer = LandmarkTrainer(config)
  state = trainer.init_state(settings.seed)
  state = fit(trainer.step, state, images, points, settings, workdir, "landmark")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  result = {
    "steps": settings.num_steps,
    "held_out_mean_error_px": trainer.mean_error_px(variables, held_images, held_points),
    "train_mean_error_px": trainer.mean_error_px(variables, images[:512], points[:512]),
    "held_out_frames": len(held_images),
    "image_size": size,
  }
  metadata = {
    "source_file": "configs/synthetic_landmarks.py",
    "trained_steps": settings.num_steps,
    "held_out_mean_error_px": result["held_out_mean_error_px"],
    **trainer.frozen.metadata(),  # what evaluate --landmarks rebuilds it from
  }
  save_pretrained(workdir, "landmarks", variables, metadata, result, "landmark_metrics.json")
  logging.info("held-out mean landmark error: %.2f px", result["held_out_mean_error_px"])
  return result


def pretrain_landmark_network(config: ml_collections.ConfigDict, workdir: str) -> None:
  """An MMFA config with the landmark loss on, ``landmark_pretraining`` settings and no
  ``pretrained.landmarks`` gets its frozen detector here first: trained into
  ``WORKDIR/landmark_network`` (or found there when the run is resumed) and set as
  ``config.pretrained.landmarks``. Other configs are left as they are."""
  settings = config.get("landmark_pretraining")
  if (
    settings is None
    or config.loss.get("landmark", 0.0) <= 0
    or config.pretrained.get("landmarks")
    or config.get("task", "animation") != "animation"
  ):
    return
  task = landmark_task_config(config, **dict(settings))
  pretrain_once(
    config, workdir, "landmarks", LANDMARK_DIRECTORY, "landmark_metrics.json",
    "configs/synthetic_landmarks.py", lambda directory: train_landmark_network(task, directory),
  )  # fmt: skip
