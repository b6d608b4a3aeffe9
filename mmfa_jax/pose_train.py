"""Pretraining the pose network on the synthetic heads: ``configs/synthetic_pose.py``.

    python -m mmfa_jax.main --config=configs/synthetic_pose.py --workdir=runs/synthetic_pose

The Hopenet-shaped network (``config.model.hopenet``, the widths the synthetic MMFA configs use)
learns yaw, pitch and roll from synthetic frames against their ground truth, as Hopenet was
trained: per angle, a cross-entropy over 66 bins of 3 degrees (bin ``floor((angle + 99) / 3)``,
clipped) plus ``alpha`` times the squared error of the softmax expectation (``bins_to_degrees``,
degrees). Inputs are prepared exactly as the frozen network sees them in an MMFA model
(``Hopenet.angles``: the frame resized to 224 and ImageNet-normalised). With ``blur`` > 0 each
training frame is first blurred by a Gaussian of sigma uniform in [0, ``blur``] pixels, as
Hopenet's training blurred some of its frames. That makes a pose reader for generated frames
(``evaluate --pose-network``): a generator's outputs are softer than the renderer's frames, and
a network trained on sharp frames alone reads no turn on them. The frozen pose network of the
MMFA configs is trained on sharp frames (``blur=0``), which it reads best (README, "Reading the
pose edits").

It writes ``WORKDIR/hopenet`` (a converted ``hopenet`` directory: ``config.pretrained.hopenet`` of
an MMFA config takes it), ``WORKDIR/metrics.jsonl`` (loss every ``log_every`` steps) and
``WORKDIR/pose_metrics.json`` with the mean absolute angle error (degrees) on held-out heads. The
job takes minutes, so it does not checkpoint: a rerun starts over.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from mmfa_jax.models.hopenet import Hopenet, hopenet_head_pose, prepare_hopenet_input
from mmfa_jax.ops.pyramid import gaussian_blur
from mmfa_jax.ops.rotation import ANGLE_BIN_WIDTH, ANGLE_OFFSET, bins_to_degrees
from mmfa_jax.train_state import TrainState, apply_gradients, make_optimizer, step_schedule

ANGLES = ("yaw", "pitch", "roll")
BLURRED_HELD_OUT_SIGMA = 1.5  # pixels: pose_metrics.json also scores held-out frames this blurred
POSE_DIRECTORY = "pose_network"  # WORKDIR/pose_network of an MMFA run that pretrains its pose

# Pose-training settings (config.pose of configs/synthetic_pose.py, config.pose_pretraining of
# configs/synthetic.py).
POSE_SETTINGS = dict(
  seed=0,
  batch_size=32,
  num_steps=1500,
  learning_rate=1e-3,
  decay_at=(0.7,),  # fractions of num_steps: learning rate x0.1 from there
  alpha=0.1,  # weight of the squared expectation error (degrees^2) beside the bin cross-entropy
  blur=0.0,  # Gaussian blur of each training frame, sigma uniform in [0, blur] pixels (0: none)
  # (yaw, pitch, roll) amplitudes (degrees) of the training and held-out heads' poses; (): the
  # data's own (data.synthetic.SyntheticHeads: 35, 20, 15). Wider ones cover more of the targets of
  # pose edits, but (60, 40, 40) left the 800-step network at 18-25 degrees of error.
  max_angles=(),
  frames_per_video=32,  # rendered once; batches are drawn from them
  held_out_videos=16,
  held_out_frames=8,
  log_every=50,
)


def synthetic_task_config(
  base: ml_collections.ConfigDict,
  task: str,
  network: str,
  settings_key: str,
  defaults: dict[str, Any],
  **settings: Any,
) -> ml_collections.ConfigDict:
  """A pretraining task on the synthetic heads of ``base`` (an MMFA synthetic config): ``task``,
  its image size and data, ``model.<network>`` of ``base``, and ``<settings_key>``: ``defaults``
  updated with ``settings``."""
  config = ml_collections.ConfigDict()
  config.task = task
  config.image_size = base.image_size
  config.model = ml_collections.ConfigDict({network: dict(base.model[network])})
  config.data = ml_collections.ConfigDict(
    dict(source="synthetic", synthetic=dict(base.data.synthetic))
  )
  config[settings_key] = ml_collections.ConfigDict(dict(defaults, **settings))
  return config


def pose_task_config(base: ml_collections.ConfigDict, **settings: Any) -> ml_collections.ConfigDict:
  """The pose-network task with the Hopenet widths of ``base``: ``POSE_SETTINGS`` updated with
  ``settings``."""
  return synthetic_task_config(base, "pose_network", "hopenet", "pose", POSE_SETTINGS, **settings)


def held_out_errors(
  predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, targets: np.ndarray
) -> np.ndarray:
  """``|predict(frames) - targets|`` over ``images`` (uint8, ``(N, H, W, 3)``) in batches of 64,
  the frames scaled to [0, 1]: the per-sample absolute errors, shaped as ``targets``."""
  errors = []
  for start in range(0, len(images), 64):
    got = predict(images[start : start + 64].astype(np.float32) / 255.0)
    errors.append(np.abs(np.asarray(got) - targets[start : start + 64]))
  return np.concatenate(errors)


def pretrain_pose_network(config: ml_collections.ConfigDict, workdir: str) -> None:
  """An MMFA config with the frozen pose network (``model.pose_network="hopenet"``),
  ``pose_pretraining`` settings and no ``pretrained.hopenet`` gets its frozen pose
  network here first: trained into ``WORKDIR/pose_network`` (or found there, when the run is
  resumed) and set as ``config.pretrained.hopenet``. Other configs are left as they are."""
  from mmfa_jax.models.variants import variant_from_config

  settings = config.get("pose_pretraining")
  if (
    settings is None
    or config.pretrained.get("hopenet")
    or config.get("task", "animation") != "animation"
  ):
    return
  if not variant_from_config(config.model).frozen_pose:  # model.pose_network="learned"
    return
  pretrain_once(
    config, workdir, "hopenet", POSE_DIRECTORY, "pose_metrics.json", "configs/synthetic_pose.py",
    lambda directory: train_pose_network(pose_task_config(config, **dict(settings)), directory),
  )  # fmt: skip


def pretrain_once(
  config: ml_collections.ConfigDict, workdir: str, kind: str, name: str, metrics: str,
  task_config: str, train: Callable[[str], Any],
) -> None:  # fmt: skip
  """A frozen network an MMFA run pretrains itself (the synthetic pose network, the landmark
  detector): ``train(WORKDIR/name)`` unless ``WORKDIR/name/metrics`` (written last) shows it was
  done before (a resumed run), then ``config.pretrained.<kind>`` = ``WORKDIR/name/<kind>``."""
  directory = os.path.join(os.path.abspath(workdir), name)
  if not os.path.isfile(os.path.join(directory, metrics)):
    if jax.process_count() > 1:
      raise ValueError(
        f"{kind} pretraining runs in one process: run {task_config} first and pass "
        f"--config.pretrained.{kind}=DIR/{kind}"
      )
    logging.info("pretraining the frozen %s network in %s", kind, directory)
    train(directory)
  with config.unlocked():
    config.pretrained[kind] = os.path.join(directory, kind)


def save_pretrained(
  workdir: str, kind: str, variables: Any, metadata: dict[str, Any], result: dict[str, Any],
  metrics: str,
) -> None:  # fmt: skip
  """Writes a pretrained frozen network: ``WORKDIR/<kind>`` (a converted directory of ``kind``
  with ``metadata``), then ``WORKDIR/<metrics>`` (``result``; last, so it marks a finished run)."""
  from mmfa_jax.checkpoints import save_converted

  save_converted(
    os.path.join(workdir, kind), jax.device_get(variables), {"kind": kind, **metadata},
    overwrite=True,
  )  # fmt: skip
  with open(os.path.join(workdir, metrics), "w") as handle:
    json.dump(result, handle, indent=2, sort_keys=True)


def blur_radius(sigma: float) -> int:
  """Taps each side of a Gaussian blur of at most ``sigma`` pixels: 2 sigma, at least 3."""
  return max(3, math.ceil(2 * sigma))


def blur_at_random(images: jax.Array, seed: int, step: jax.Array, max_sigma: float) -> jax.Array:
  """The training blur of the pretraining tasks: each of ``images`` (``(B, H, W, C)``) blurred by
  a Gaussian of sigma uniform in [0, ``max_sigma``] pixels, drawn from ``seed`` and the step
  number; ``max_sigma`` 0 leaves them as they are."""
  if max_sigma <= 0:
    return images
  key = jax.random.fold_in(jax.random.key(seed), step)
  sigmas = jax.random.uniform(key, (images.shape[0],), maxval=max_sigma)  # (B,) pixels
  return gaussian_blur(images, sigmas, blur_radius(max_sigma))


def angle_bins(degrees: jax.Array, num_bins: int = 66) -> jax.Array:
  """Hopenet's class of an angle: the 3-degree bin whose lower edge (from -99) is below it."""
  index = jnp.floor((degrees - ANGLE_OFFSET) / ANGLE_BIN_WIDTH).astype(jnp.int32)
  return jnp.clip(index, 0, num_bins - 1)


def pose_loss(
  logits: dict[str, jax.Array], angles: jax.Array, alpha: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Hopenet's loss: per angle, bin cross-entropy + ``alpha`` * squared error of the expectation
  (degrees). ``angles``: ``(B, 3)`` ground-truth (yaw, pitch, roll). Returns ``(loss, terms)``."""
  terms = {}
  for index, name in enumerate(ANGLES):
    scores = logits[name].astype(jnp.float32)  # (B, bins)
    target = angles[:, index]
    labels = angle_bins(target, scores.shape[-1])
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(scores, labels).mean()
    error = jnp.mean((bins_to_degrees(scores) - target) ** 2)
    terms[f"{name}_cross_entropy"] = cross_entropy
    terms[f"{name}_rmse_deg"] = jnp.sqrt(error)
    terms[f"{name}_loss"] = cross_entropy + alpha * error
  return sum(terms[f"{name}_loss"] for name in ANGLES), terms


def pose_angles(heads: Any, video: int, frame: int) -> list[float]:
  """The (yaw, pitch, roll) of one synthetic frame, degrees."""
  motion = heads.motion(video, frame)
  return [motion[name] for name in ANGLES]


def render_set(
  seed: int,
  videos: int,
  frames: int,
  size: int,
  stride: int = 1,
  target: Callable[[Any, int, int], Any] = pose_angles,
  max_angles: Sequence[float] = (),
) -> tuple:
  """Synthetic frames (uint8 ``(N, S, S, 3)``) and their targets (float32 ``(N, ...)``,
  ``target(heads, video, frame)``, by default (yaw, pitch, roll)): ``videos`` identities of
  collection ``seed``, ``frames`` frames each (every ``stride``-th), with the (yaw, pitch, roll)
  amplitudes ``max_angles`` (degrees; () for the collection's default)."""
  from mmfa_jax.data.synthetic import SyntheticHeads

  if max_angles and len(max_angles) != 3:
    raise ValueError(f"max_angles takes (yaw, pitch, roll) degrees, got {tuple(max_angles)}")
  amplitudes = dict(zip(("max_yaw", "max_pitch", "max_roll"), max_angles, strict=False))
  heads = SyntheticHeads(seed=seed, num_videos=videos, num_frames=frames * stride, **amplitudes)
  images, targets = [], []
  for video in range(videos):
    for frame in range(0, frames * stride, stride):
      images.append(np.round(heads.frame(video, frame, size) * 255).astype(np.uint8))
      targets.append(target(heads, video, frame))
  return np.stack(images), np.asarray(targets, np.float32)


def fit(
  step: Callable[..., tuple], state: Any, images: np.ndarray, targets: np.ndarray,
  settings: Any, workdir: str, name: str,
) -> Any:  # fmt: skip
  """``settings.num_steps`` calls of ``step(state, images, targets) -> (state, metrics)`` on
  random batches of ``settings.batch_size`` rows (seed ``settings.seed``), with a progress bar
  and the metrics' averages every ``settings.log_every`` steps in ``WORKDIR/metrics.jsonl``
  (``metrics[f"{name}_loss"]`` shown on the bar). Returns the last state."""
  from tqdm import tqdm

  from mmfa_jax.metric_logs import MetricWriter

  rng = np.random.default_rng(settings.seed)
  writer = MetricWriter(workdir)
  window: list[dict[str, float]] = []
  with tqdm(total=settings.num_steps, desc=name, unit="step", dynamic_ncols=True) as progress:
    for index in range(1, settings.num_steps + 1):
      rows = rng.integers(len(images), size=settings.batch_size)
      state, metrics = step(state, images[rows], targets[rows])
      window.append(metrics)
      progress.update(1)
      if index % settings.log_every == 0 or index == settings.num_steps:
        averages = {k: float(np.mean([float(m[k]) for m in window])) for k in window[0]}
        writer.write(index, averages)
        progress.set_postfix(loss=f"{averages[f'{name}_loss']:.3f}")
        window = []
  writer.close()
  return state


class PoseTrainer:
  """The network, its optimizer and the compiled step of a ``configs/synthetic_pose.py`` config."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    pose = config.pose
    hopenet = {
      k: tuple(v) if isinstance(v, list | tuple) else v for k, v in config.model.hopenet.items()
    }
    self.network = Hopenet(**hopenet, trainable=True)
    self.frozen_network = Hopenet(**hopenet)  # as an MMFA model runs it
    milestones = [round(f * pose.num_steps) for f in pose.decay_at]
    self.tx = make_optimizer(step_schedule(pose.learning_rate, milestones, 0.1))
    self.step = jax.jit(self._step, donate_argnums=0)
    self.angles = jax.jit(
      lambda variables, images: hopenet_head_pose(self.frozen_network, variables, images)
    )

  def init_state(self, seed: int) -> TrainState:
    from mmfa_jax.initialization import init_variables

    variables = init_variables(self.network, seed, np.zeros((1, 224, 224, 3), np.float32))
    return TrainState.create(variables["params"], variables["batch_stats"], self.tx)

  def _step(self, state: TrainState, images: jax.Array, angles: jax.Array) -> tuple:
    pose = self.config.pose
    images = images.astype(jnp.float32) / 255.0  # (B, S, S, 3)
    prepared = prepare_hopenet_input(blur_at_random(images, pose.seed, state.step, pose.blur))

    def loss(params: Any) -> tuple[jax.Array, Any]:
      logits, updated = self.network.apply(
        {"params": params, "batch_stats": state.batch_stats},
        prepared,
        True,
        mutable=["batch_stats"],
      )
      value, terms = pose_loss(logits, angles, self.config.pose.alpha)
      return value, (terms, updated["batch_stats"])

    (value, (terms, stats)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
    state, skipped = apply_gradients(state, grads, stats, loss=value)
    return state, {"pose_loss": value, "skipped": skipped, **terms}

  def mean_abs_error(
    self, variables: Any, images: np.ndarray, angles: np.ndarray, blur: float = 0.0
  ) -> dict[str, float]:
    """Mean absolute error (degrees) per angle of the frozen-mode network on ``images`` (uint8),
    each first blurred by a Gaussian of sigma ``blur`` pixels (0: as they are)."""

    def predict(frames: np.ndarray) -> np.ndarray:
      if blur > 0:
        sigmas = jnp.full((len(frames),), blur, jnp.float32)
        frames = gaussian_blur(jnp.asarray(frames), sigmas, blur_radius(blur))
      got = self.angles(variables, frames)
      return np.stack([np.asarray(got[n]) for n in ANGLES], -1)  # (N, 3)

    error = held_out_errors(predict, images, angles)
    return {name: float(error[:, i].mean()) for i, name in enumerate(ANGLES)}


def train_pose_network(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and writes the pose network (module docstring); returns ``pose_metrics.json``."""
  pose, size = config.pose, config.image_size
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  data = config.data.synthetic
  counts = (data.num_videos * pose.frames_per_video, pose.held_out_videos * pose.held_out_frames)
  logging.info("rendering %d training and %d held-out frames", *counts)
  from mmfa_jax.data.synthetic import HELD_OUT_SEED

  angles_range = tuple(pose.max_angles)
  images, angles = render_set(
    data.seed, data.num_videos, pose.frames_per_video, size, max_angles=angles_range
  )
  held_images, held_angles = render_set(
    HELD_OUT_SEED, pose.held_out_videos, pose.held_out_frames, size, 4, max_angles=angles_range
  )
  trainer = PoseTrainer(config)
  state = fit(trainer.step, trainer.init_state(pose.seed), images, angles, pose, workdir, "pose")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  result = {
    "steps": pose.num_steps,
    "held_out_mean_abs_error_deg": trainer.mean_abs_error(variables, held_images, held_angles),
    "held_out_blurred_mean_abs_error_deg": trainer.mean_abs_error(
      variables, held_images, held_angles, BLURRED_HELD_OUT_SIGMA
    ),
    "held_out_blur_sigma": BLURRED_HELD_OUT_SIGMA,
    "max_angles": list(angles_range),
    "train_mean_abs_error_deg": trainer.mean_abs_error(variables, images[:512], angles[:512]),
    "held_out_frames": len(held_images),
  }
  metadata = {
    "source_file": "configs/synthetic_pose.py",
    "trained_steps": pose.num_steps,
    "held_out_mean_abs_error_deg": result["held_out_mean_abs_error_deg"],
    "training_blur": pose.blur,
    "network": {k: list(v) if isinstance(v, tuple) else v for k, v in config.model.hopenet.items()},
  }
  save_pretrained(workdir, "hopenet", variables, metadata, result, "pose_metrics.json")
  logging.info(
    "held-out mean absolute error (degrees): %s; blurred by sigma %g px: %s",
    result["held_out_mean_abs_error_deg"], BLURRED_HELD_OUT_SIGMA,
    result["held_out_blurred_mean_abs_error_deg"],
  )  # fmt: skip
  return result
