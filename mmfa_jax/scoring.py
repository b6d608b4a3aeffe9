"""Scoring generated frames for ``python -m mmfa_jax.evaluate`` and the in-training evaluators:
per-frame L1 / PSNR / SSIM (``metrics.image_metrics``), LPIPS and FID from converted networks, AKD
from a landmark detector (``models.landmarks``)."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfa_jax.data.evaluation import Item


def pose_reader(directory: str, model_config: Any) -> Any:
  """A converted Hopenet directory as a pose reader: ``frames (B, H, W, 3) in [0, 1] -> {'yaw',
  'pitch', 'roll'}`` (NumPy degrees, ``(B,)``). Its shape is ``metadata['network']`` (written by
  the synthetic pose pretraining), else ``model_config.hopenet`` (the evaluated model's own pose
  network). Raises ``ValueError`` naming the directory when the arrays do not fit that shape."""
  import jax

  from mmfa_jax.checkpoints import load_converted
  from mmfa_jax.inference import on_device
  from mmfa_jax.models.hopenet import Hopenet, hopenet_head_pose

  variables, metadata = load_converted(directory, "hopenet")
  shape = metadata.get("network") or dict(model_config["hopenet"])
  network = Hopenet(**{k: tuple(v) if isinstance(v, list) else v for k, v in shape.items()})
  image = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
  wanted = jax.eval_shape(lambda x: network.init(jax.random.key(0), x), image)
  if jax.tree.map(np.shape, dict(wanted)) != jax.tree.map(np.shape, dict(variables)):
    raise ValueError(
      f"{directory}: its arrays do not fit a Hopenet of {shape} (a pose network of another "
      "size than this model's)"
    )
  read = jax.jit(functools.partial(hopenet_head_pose, network))
  variables = on_device(variables)
  return lambda frames: {k: np.asarray(v) for k, v in read(variables, frames).items()}


class Scorer:
  """Accumulates per-frame metrics and FID statistics for one set of predictions; ``real_from``:
  another scorer of the same real frames whose real-frame statistics this one reads (computed once)."""

  def __init__(
    self,
    wanted: Sequence[str],
    lpips: Any,
    inception: Any,
    real_from: Any = None,
    landmarks: Any = None,
  ):
    self.wanted = wanted
    self.values: dict[str, list[float]] = {k: [] for k in wanted if k != "fid"}
    self.lpips, self.inception, self.landmarks = lpips, inception, landmarks
    self.generated = self.real = None
    self.owns_real = real_from is None
    if "fid" in wanted:
      from mmfa_jax.metrics import FeatureStatistics

      self.generated = FeatureStatistics(2048)
      self.real = FeatureStatistics(2048) if self.owns_real else real_from.real

  def add(
    self,
    prediction: np.ndarray,
    target: np.ndarray | None,
    real: np.ndarray,
    points: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """One batch; ``points``: the landmarks of ``prediction`` and ``target`` where the caller
    has them already (AKD detects the others). Returns both landmark sets ((B, L, 2) each, or the
    ``points`` given where AKD is not scored), for the caller to reuse."""
    from mmfa_jax.metrics import image_metrics

    if target is not None:
      pixel = image_metrics(prediction, target)
      for name in ("l1", "psnr", "ssim"):
        if name in self.values:
          self.values[name].extend(np.asarray(pixel[name]).tolist())
      if "lpips" in self.values:
        self.values["lpips"].extend(np.asarray(self.lpips(prediction, target)).tolist())
      if "akd" in self.values:
        from mmfa_jax.metrics import average_keypoint_distance

        points = tuple(
          np.asarray(self.landmarks(image)) if known is None else known
          for image, known in zip((prediction, target), points)
        )
        distance = average_keypoint_distance(*points, prediction.shape[1])
        self.values["akd"].extend(distance.tolist())
    if self.generated is not None:
      self.generated.add(np.asarray(self.inception(prediction)))
      if self.owns_real:
        self.real.add(np.asarray(self.inception(real)))
    return points

  def summary(self) -> dict[str, float]:
    from mmfa_jax.metrics import fid, mean_finite

    out = {name: mean_finite(values) for name, values in self.values.items() if values}
    if self.generated is not None:
      out["fid"] = fid(self.real, self.generated)
    return out


def padded_batches(function: Any, size: int) -> Any:
  """``function`` of image batches called on batches padded to ``size`` rows (one compilation for
  every batch; the padding rows' outputs are dropped)."""

  def call(*images: np.ndarray) -> np.ndarray:
    count = images[0].shape[0]
    padded = [np.concatenate([x, np.repeat(x[-1:], size - count, 0)]) for x in images]
    return np.asarray(function(*padded))[:count]

  return call


def metric_network(kind: str, directory: str) -> tuple[Any, str]:
  """``(compiled function, weights sha256)`` of a converted metric network."""
  import jax

  from mmfa_jax.checkpoints import file_sha256, load_converted
  from mmfa_jax.inference import on_device

  variables, metadata = load_converted(directory, kind)
  sha = metadata.get("source_sha256") or file_sha256(os.path.join(directory, "metadata.json"))
  # The weights are an argument on the device (not closed-over constants compiled into the
  # program and copied from the host per call).
  variables = on_device(variables)
  if kind == "landmarks":  # AKD's detector: (B, H, W, 3) -> (B, L, 2)
    from mmfa_jax.models.landmarks import FrozenLandmarks

    detector = FrozenLandmarks.from_metadata(metadata, directory)
    return functools.partial(jax.jit(detector.apply), variables), sha
  if kind == "lpips":
    from mmfa_jax.models.lpips import LPIPS

    lpips = jax.jit(LPIPS().apply)
    return functools.partial(lpips, variables), sha
  from mmfa_jax.models.inception import FIDInception

  inception = jax.jit(FIDInception().apply)
  return functools.partial(inception, variables), sha


class Scores:
  """The model's scores, the copy-the-source baseline's on the same real frames and, in
  reconstruction, frame 0's alone: the source driven by itself, with no motion to get right (what
  the appearance path, encoder and generator, reaches: a ceiling for the other frames)."""

  def __init__(
    self,
    wanted: Sequence[str],
    lpips: Any,
    inception: Any,
    batch_size: int,
    own_frame: bool,
    landmarks: Any = None,
  ):
    self.model = Scorer(wanted, lpips, inception, landmarks=landmarks)
    self.baseline = Scorer(wanted, lpips, inception, real_from=self.model, landmarks=landmarks)
    own = [m for m in wanted if m != "fid"]
    self.own_frame = Scorer(own, lpips, None, landmarks=landmarks) if own_frame else None
    self.batch_size = batch_size
    self.landmarks = landmarks if "akd" in wanted else None

  def add(self, item: Item, saved: np.ndarray) -> None:
    real = item.target if item.target is not None else item.driving
    copies = np.broadcast_to(item.source, item.driving.shape)
    detect = self.landmarks is not None and item.target is not None
    # AKD: the source's landmarks once per video, each target batch's once for both scorers.
    source_points = np.asarray(self.landmarks(item.source[None])) if detect else None  # (1, L, 2)
    first_points = None  # frame 0's (generated, target) landmarks, for its own scorer
    for start in range(0, len(saved), self.batch_size):
      rows = slice(start, start + self.batch_size)
      target = None if item.target is None else item.target[rows]
      target_points = copy_points = None
      if detect:
        target_points = np.asarray(self.landmarks(target))  # (b, L, 2)
        copy_points = np.broadcast_to(source_points, target_points.shape)
      model_points = self.model.add(saved[rows], target, real[rows], (None, target_points))
      if first_points is None:
        first_points = tuple(None if p is None else p[:1] for p in model_points)
      copy = np.ascontiguousarray(copies[rows])
      self.baseline.add(copy, target, real[rows], (copy_points, target_points))
    if self.own_frame is not None and item.target is not None:
      self.own_frame.add(saved[:1], item.target[:1], real[:1], first_points)

  def summary(self) -> dict[str, Any]:
    own = self.own_frame.summary() if self.own_frame is not None else {}
    return {
      "metrics": self.model.summary(),
      "baselines": {"copy_source": self.baseline.summary()},
      **({"self_reconstruction": own} if own else {}),
    }
