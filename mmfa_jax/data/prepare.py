"""Face crops from arbitrary videos into the training layout (``ROOT/SPLIT/<name>.mp4/NNNNNNN.png``).

Per clip: detect the largest frontal face every ``detect_every`` frames with OpenCV's bundled Haar
cascade, take the union of the detections (one crop for the whole clip, so the crop does not
jitter), enlarge it by ``margin`` of its size on every side, make it square, keep it inside the
frame, crop every frame and resize to ``size``. Clips that cannot be read, are too short, or show
no face are skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from mmfa_jax.data.video import VIDEO_SUFFIXES, FrameReadError, count_frames, read_frames


@dataclasses.dataclass
class PreparedClip:
  source: str
  output: str | None
  frames: int = 0
  skipped: str | None = None  # the reason, when skipped


def _cascade():
  import cv2

  path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
  cascade = cv2.CascadeClassifier(path)
  if cascade.empty():
    raise RuntimeError(f"OpenCV's face cascade could not be loaded from {path}")
  return cascade


def detect_face(frame: np.ndarray, cascade) -> tuple[int, int, int, int] | None:
  """Largest face ``(x, y, w, h)`` in pixels of a float RGB frame, or None."""
  import cv2

  gray = cv2.cvtColor((np.clip(frame, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
  faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
  if len(faces) == 0:
    return None
  x, y, w, h = max(faces, key=lambda box: box[2] * box[3])
  return int(x), int(y), int(w), int(h)


def square_crop(
  boxes: list[tuple[int, int, int, int]], height: int, width: int, margin: float
) -> tuple[int, int, int]:
  """Union of boxes, enlarged by ``margin`` per side, squared and kept inside: ``(x0, y0, side)``."""
  x0 = min(b[0] for b in boxes)
  y0 = min(b[1] for b in boxes)
  x1 = max(b[0] + b[2] for b in boxes)
  y1 = max(b[1] + b[3] for b in boxes)
  side = round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))
  side = min(side, height, width)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  left = round(min(max(cx - side / 2, 0), width - side))
  top = round(min(max(cy - side / 2, 0), height - side))
  return left, top, side


def prepare_clip(
  path: str, out_root: str, split: str = "train", size: int = 256, margin: float = 0.25,
  min_frames: int = 16, detect_every: int = 5,
) -> PreparedClip:  # fmt: skip
  """Crops one clip; returns what was written or why it was skipped."""
  try:
    num_frames = count_frames(path)
    if num_frames < min_frames:
      return PreparedClip(path, None, num_frames, f"too short ({num_frames} < {min_frames} frames)")
    frames = read_frames(path, range(num_frames))
  except FrameReadError as error:
    return PreparedClip(path, None, 0, f"unreadable ({error})")
  cascade = _cascade()
  boxes = [
    box
    for box in (detect_face(frames[i], cascade) for i in range(0, num_frames, detect_every))
    if box
  ]
  if not boxes:
    return PreparedClip(path, None, num_frames, "no face found")
  height, width = frames[0].shape[:2]
  left, top, side = square_crop(boxes, height, width, margin)
  name = os.path.splitext(os.path.basename(path))[0] + ".mp4"
  output = os.path.join(out_root, split, name)
  staging = output + ".partial"
  os.makedirs(staging, exist_ok=True)
  for index, frame in enumerate(frames):
    crop = (np.clip(frame[top : top + side, left : left + side], 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(crop).resize((size, size), Image.BILINEAR).save(
      os.path.join(staging, f"{index:07d}.png")
    )
  os.replace(staging, output)  # a clip appears only once complete
  return PreparedClip(path, output, num_frames)


def find_videos(folder: str) -> list[str]:
  """Video files under ``folder`` (recursively), sorted."""
  found = []
  for directory, _, names in os.walk(folder):
    found += [os.path.join(directory, n) for n in names if n.lower().endswith(VIDEO_SUFFIXES)]
  return sorted(found)
