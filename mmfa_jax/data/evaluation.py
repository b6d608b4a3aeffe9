"""Evaluation iteration: whole test videos in frame order (reconstruction), and cross-identity pairs.

Reconstruction (FOMM protocol): every frame of each test video, in order; frame 0 is the source.
Cross-identity: a CSV with ``source`` and ``driving`` columns naming videos of the split (the
FOMM ``pairs_list`` format); the source's first frame animated by the driving video.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from mmfa_jax.data.video import FrameReadError, count_frames, is_video_entry, read_frames, resize


def split_videos(root: str, split: str = "test") -> list[str]:
  """Sorted video entries (files or frame folders) of ``ROOT/split``."""
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{folder}: no such folder")
  return [
    os.path.join(folder, n)
    for n in sorted(os.listdir(folder))
    if is_video_entry(os.path.join(folder, n))
  ]


def read_video(path: str, image_size: int) -> np.ndarray:
  """All frames of a video entry, ``(T, size, size, 3)`` float32 in [0, 1]."""
  frames = read_frames(path, range(count_frames(path)))
  if not frames:
    raise FrameReadError(f"{path}: no frames")
  return np.stack([resize(frame, image_size) for frame in frames])


def reconstruction_videos(
  root: str, image_size: int, split: str = "test"
) -> Iterator[tuple[str, np.ndarray]]:
  """``(video name, frames)`` for every readable test video, in name order (unreadable ones are
  skipped; ``FrameReadError`` is logged by the caller's choice: here they are simply not yielded)."""
  for path in split_videos(root, split):
    try:
      yield os.path.basename(path), read_video(path, image_size)
    except FrameReadError:
      continue


def read_pairs_csv(path: str) -> list[tuple[str, str]]:
  """``[(source video, driving video)]`` from a CSV with ``source`` and ``driving`` columns."""
  with open(path, newline="") as handle:
    reader = csv.DictReader(handle)
    if not reader.fieldnames or not {"source", "driving"} <= set(reader.fieldnames):
      raise ValueError(f"{path}: needs 'source' and 'driving' columns (found {reader.fieldnames})")
    return [(row["source"], row["driving"]) for row in reader]


def cross_identity_pairs(
  root: str, pairs_csv: str, image_size: int, split: str = "test"
) -> Iterator[tuple[str, str, np.ndarray, np.ndarray]]:
  """``(source name, driving name, source image (S, S, 3), driving frames (T, S, S, 3))``."""
  folder = os.path.join(root, split)
  for source_name, driving_name in read_pairs_csv(pairs_csv):
    source_path, driving_path = (
      os.path.join(folder, source_name),
      os.path.join(folder, driving_name),
    )
    for path in (source_path, driving_path):
      if not os.path.exists(path):
        raise FileNotFoundError(
          f"{pairs_csv}: names {os.path.basename(path)!r}, not found in {folder}"
        )
    source = resize(read_frames(source_path, [0])[0], image_size)
    yield source_name, driving_name, source, read_video(driving_path, image_size)


# --------------------------------------------------------------------------------------------
# Evaluation items (python -m mmfa_jax.evaluate, the in-training evaluators)


@dataclasses.dataclass
class Item:
  """One evaluated video: the source image, the driving frames and, where known, the targets
  (all ``(S, S, 3)`` / ``(T, S, S, 3)`` float32 in [0, 1])."""

  name: str
  source: np.ndarray | None  # None: an unreadable video, skipped
  driving: np.ndarray | None
  target: np.ndarray | None


def _limit(frames: np.ndarray, max_frames: int | None) -> np.ndarray:
  return frames if max_frames is None else frames[:max_frames]


def _identity(name: str) -> str:
  """A video's identity: its name up to the first ``#`` (VoxCeleb's ``id#video`` convention)."""
  return name.split("#", 1)[0]


def default_pairs(names: Sequence[str]) -> list[tuple[str, str]]:
  """Each video with the next one (cyclically, in name order) of another identity."""
  names = sorted(names)
  pairs = []
  for i, name in enumerate(names):
    others = [names[(i + k) % len(names)] for k in range(1, len(names))]
    driving = next((o for o in others if _identity(o) != _identity(name)), None)
    if driving is not None:
      pairs.append((name, driving))
  return pairs


def synthetic_items(
  protocol: str, size: int, num_videos: int, max_frames: int | None
) -> Iterator[Item]:
  """Held-out synthetic heads (``HELD_OUT_SEED``) with exact targets for both protocols."""
  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads, render_head

  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=num_videos)
  frames = heads.num_frames if max_frames is None else min(max_frames, heads.num_frames)
  for video in range(num_videos):
    if protocol == "reconstruction":
      clip = np.stack([heads.frame(video, f, size) for f in range(frames)])
      yield Item(f"synthetic{video:03d}", clip[0], clip, clip)
      continue
    driver = (video + 1) % num_videos
    clip = np.stack([heads.frame(driver, f, size) for f in range(frames)])
    source_motion, first = heads.motion(video, 0), heads.motion(driver, 0)
    targets = []
    for f in range(frames):
      moved = dict(heads.motion(driver, f))  # the driver's expression
      for name in ("yaw", "pitch", "roll", "tx", "ty"):
        moved[name] = source_motion[name] + moved[name] - first[name]
      moved["scale"] = source_motion["scale"] * moved["scale"] / first["scale"]
      targets.append(render_head(heads.identity(video), moved, size))
    yield Item(
      f"synthetic{video:03d}_by_synthetic{driver:03d}",
      heads.frame(video, 0, size),
      clip,
      np.stack(targets),
    )


def reconstruction_stream(
  by_name: dict[str, str], names: list[str], size: int, max_frames: int | None
) -> Iterator[Item]:
  """Items of the videos ``names`` (paths in ``by_name``) in order; an unreadable one is an item
  without frames (skipped and counted by the caller)."""
  for name in names:
    try:
      clip = _limit(read_video(by_name[name], size), max_frames)
    except FrameReadError as error:
      logging.warning("skipped: %s", error)
      yield Item(name, None, None, None)  # counted as skipped
      continue
    yield Item(name, clip[0], clip, clip)


def pair_stream(
  by_name: dict[str, str], pairs: list[tuple[str, str]], size: int, max_frames: int | None
) -> Iterator[Item]:
  """Items of ``(source video, driving video)`` name pairs: the source's first frame animated by
  the driving video (no exact target)."""
  for source_name, driving_name in pairs:
    source = resize(read_frames(by_name[source_name], [0])[0], size)
    clip = _limit(read_video(by_name[driving_name], size), max_frames)
    yield Item(f"{source_name}_by_{driving_name}", source, clip, None)
