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

from mmfa_jax.atomic import staged
from mmfa_jax.data.faces import find_face_crop
from mmfa_jax.data.video import VIDEO_SUFFIXES, FrameReadError, count_frames, read_frames


@dataclasses.dataclass
class PreparedClip:
  source: str
  output: str | None
  frames: int = 0
  skipped: str | None = None  # the reason, when skipped


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
  crop = find_face_crop(frames, margin, detect_every)
  if crop is None:
    return PreparedClip(path, None, num_frames, "no face found")
  left, top, side = crop.left, crop.top, crop.side
  name = os.path.splitext(os.path.basename(path))[0] + ".mp4"
  output = os.path.join(out_root, split, name)
  with staged(output) as staging:  # a clip appears only once complete
    os.makedirs(staging)
    for index, frame in enumerate(frames):
      crop = frame[top : top + side, left : left + side]
      pixels = (np.clip(crop, 0, 1) * 255 + 0.5).astype(np.uint8)
      Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(
        os.path.join(staging, f"{index:07d}.png")
      )
  return PreparedClip(path, output, num_frames)


def find_videos(folder: str) -> list[str]:
  """Video files under ``folder`` (recursively), sorted."""
  found = []
  for directory, _, names in os.walk(folder):
    found += [os.path.join(directory, n) for n in names if n.lower().endswith(VIDEO_SUFFIXES)]
  return sorted(found)
