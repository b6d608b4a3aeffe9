"""Evaluation iteration: whole test videos in frame order (reconstruction), and cross-identity pairs.

Reconstruction (FOMM protocol): every frame of each test video, in order; frame 0 is the source.
Cross-identity: a CSV with ``source`` and ``driving`` columns naming videos of the split (the
FOMM ``pairs_list`` format); the source's first frame animated by the driving video.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator

import numpy as np

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
