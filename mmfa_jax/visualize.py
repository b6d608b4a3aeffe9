"""Pictures people look at: keypoints drawn on frames, sample grids, PNG files.

Images are float arrays ``(H, W, 3)`` in [0, 1]; keypoints are (x, y[, z]) in normalised
coordinates (-1 = left / top edge, 1 = right / bottom edge, pixel centres at align_corners=False
positions). Everything here is numpy on the host.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Mapping, Sequence

import numpy as np


def keypoint_colours(count: int) -> np.ndarray:
  """``(count, 3)`` distinct RGB colours (hues evenly spaced)."""
  return np.array([colorsys.hsv_to_rgb(i / max(count, 1), 0.9, 1.0) for i in range(count)])


def to_pixels(keypoints: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Normalised (x, y) -> pixel (column, row) coordinates for an image of ``size`` (H, W)."""
  height, width = size
  points = np.asarray(keypoints)[..., :2]
  return np.stack(
    [((points[..., 0] + 1) * width - 1) / 2, ((points[..., 1] + 1) * height - 1) / 2], -1
  )


def draw_keypoints(
  image: np.ndarray, keypoints: np.ndarray, radius: int | None = None
) -> np.ndarray:
  """A copy of ``image`` with each keypoint ``(K, 2+)`` drawn as a filled disc in its own colour."""
  out = np.array(image, dtype=np.float32, copy=True)
  height, width = out.shape[:2]
  radius = radius if radius is not None else max(1, round(min(height, width) / 64))
  rows, cols = np.mgrid[:height, :width]
  colours = keypoint_colours(len(keypoints))
  for (col, row), colour in zip(to_pixels(keypoints, (height, width)), colours):
    disc = (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    out[disc] = colour
  return out


def resize_nearest(image: np.ndarray, size: int) -> np.ndarray:
  """Square nearest-neighbour resize (for showing small outputs next to big ones)."""
  height, width = image.shape[:2]
  rows = (np.arange(size) * height // size).clip(0, height - 1)
  cols = (np.arange(size) * width // size).clip(0, width - 1)
  return image[rows][:, cols]


def as_rgb(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image[..., None]
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def sample_grid(
  columns: Sequence[tuple[str, np.ndarray]], max_rows: int = 4, padding: int = 2
) -> np.ndarray:
  """Tiles named columns of per-sample images ``(B, h, w, C)`` (C = 1 or 3) into one image.

  Every image is resized (nearest) to the size of the first column's images; rows are samples.
  Returns ``(rows * (S + pad), cols * (S + pad), 3)`` float in [0, 1].
  """
  size = columns[0][1].shape[1]
  rows = min(max_rows, columns[0][1].shape[0])
  cell = size + padding
  grid = np.ones((rows * cell, len(columns) * cell, 3), np.float32)
  for c, (_, images) in enumerate(columns):
    for r in range(rows):
      tile = resize_nearest(as_rgb(images[r]), size)
      grid[r * cell : r * cell + size, c * cell : c * cell + size] = np.clip(tile, 0, 1)
  return grid


def training_columns(
  batch: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]
) -> list[tuple[str, np.ndarray]]:
  """Source (source keypoints drawn), driving (driving keypoints drawn), generated at each output
  size (largest first) and the occlusion map, for ``sample_grid``."""
  source = np.asarray(batch["source"])
  driving = np.asarray(batch["driving"])
  kp_source, kp_driving = np.asarray(outputs["kp_source"]), np.asarray(outputs["kp_driving"])
  columns = [
    ("source", np.stack([draw_keypoints(s, k) for s, k in zip(source, kp_source)])),
    ("driving", np.stack([draw_keypoints(d, k) for d, k in zip(driving, kp_driving)])),
  ]
  predictions = outputs.get("predictions") or {source.shape[1]: outputs["prediction"]}
  for size in sorted(predictions, reverse=True):
    columns.append((f"generated {size}", np.asarray(predictions[size])))
  if "occlusion_map" in outputs:
    columns.append(("occlusion", np.asarray(outputs["occlusion_map"])))
  return columns


def save_png(path: str | os.PathLike, image: np.ndarray) -> str:
  """Writes a float [0, 1] image as 8-bit PNG (atomically, ``atomic.staged``)."""
  from PIL import Image

  from mmfa_jax.atomic import staged

  path = os.fspath(path)
  pixels = (np.clip(as_rgb(image), 0, 1) * 255 + 0.5).astype(np.uint8)
  with staged(path) as staging:
    Image.fromarray(pixels).save(staging, format="PNG")
  return path
