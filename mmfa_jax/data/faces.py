"""Face boxes and square face crops, and pasting a generated crop back with a feathered edge.

The detector is OpenCV's frontal-face Haar cascade, which ships inside the ``opencv-python``
wheel (the ``video`` extra): nothing is downloaded. Boxes are ``(x, y, w, h)`` in pixels; a crop is
``FaceCrop(left, top, side)``, a square inside the frame.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from mmfa_jax.data.video import resize


def face_detector():
  """OpenCV's frontal-face Haar cascade, shipped inside the opencv-python wheel."""
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


@dataclasses.dataclass(frozen=True)
class FaceCrop:
  """A square ``side`` x ``side`` pixel window at ``(left, top)`` of a frame."""

  left: int
  top: int
  side: int

  def crop(self, frame: np.ndarray, size: int) -> np.ndarray:
    """The window of a float ``(H, W, 3)`` frame, resized to ``(size, size, 3)``."""
    window = frame[self.top : self.top + self.side, self.left : self.left + self.side]
    return resize(window, size)

  def paste(self, frame: np.ndarray, patch: np.ndarray, feather: float = 0.1) -> np.ndarray:
    """``frame`` with ``patch`` (any square size) resized into the window and blended by a mask
    that is 1 inside and falls linearly to 0 over the outer ``feather`` fraction of the side."""
    window = resize(patch, self.side)  # (side, side, 3)
    mask = feather_mask(self.side, feather)[..., None]  # (side, side, 1)
    out = np.array(frame, np.float32)
    region = out[self.top : self.top + self.side, self.left : self.left + self.side]
    region[...] = mask * window + (1 - mask) * region
    return out


def feather_mask(side: int, feather: float) -> np.ndarray:
  """``(side, side)`` weights: 1 in the middle, linear ramps to 0 over ``feather * side`` pixels at
  every edge (pixel centres; an edge pixel gets ``0.5 / ramp``)."""
  ramp = max(feather * side, 1e-6)
  centres = np.arange(side, dtype=np.float32) + 0.5
  edge = np.minimum(centres, side - centres)  # distance to the nearer edge, (side,)
  weights = np.clip(edge / ramp, 0.0, 1.0)
  return np.minimum(weights[:, None], weights[None, :])


def find_face_crop(frames, margin: float = 0.25, detect_every: int = 1) -> FaceCrop | None:
  """One square crop holding the largest face of every ``detect_every``-th frame (their union,
  enlarged by ``margin`` per side), or None when no frame shows a face. ``frames`` is any
  iterable of float RGB frames of one size, read once."""
  detector = face_detector()
  boxes, shape = [], None
  for index, frame in enumerate(frames):
    shape = frame.shape
    if index % detect_every == 0:
      box = detect_face(frame, detector)
      if box:
        boxes.append(box)
  if not boxes:
    return None
  return FaceCrop(*square_crop(boxes, shape[0], shape[1], margin))
