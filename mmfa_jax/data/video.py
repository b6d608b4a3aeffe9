"""Reading frames: image files (any mode), frame folders and video files (PyAV), as float RGB.

Every reader returns ``(H, W, 3)`` float32 RGB in [0, 1]: grayscale is repeated, alpha dropped,
16-bit scaled by 1/65535, palette images converted. Errors are ``FrameReadError`` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

VIDEO_SUFFIXES = (".mp4", ".gif", ".mov", ".webm", ".avi", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class FrameReadError(ValueError):
  """A frame, image or video that cannot be read; the message names the file."""


def to_rgb_float(array: np.ndarray) -> np.ndarray:
  """Any image array (gray, gray+alpha, RGB, RGBA; uint8, uint16, float) -> float32 RGB [0, 1]."""
  array = np.asarray(array)
  if array.dtype == np.uint8:
    values = array.astype(np.float32) / 255
  elif array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.max(initial=0) > 255):
    values = array.astype(np.float32) / 65535
  elif array.dtype.kind in "iu":
    values = array.astype(np.float32) / 255
  else:
    values = array.astype(np.float32)
  if values.ndim == 2:
    values = values[..., None]
  channels = values.shape[-1]
  if channels in (1, 2):  # gray (+ alpha)
    values = np.repeat(values[..., :1], 3, axis=-1)
  elif channels == 4:
    values = values[..., :3]
  elif channels != 3:
    raise ValueError(f"unsupported channel count {channels}")
  return np.clip(values, 0, 1)


def read_image(path: str) -> np.ndarray:
  """One image file -> float32 RGB (H, W, 3) in [0, 1]."""
  try:
    with Image.open(path) as image:
      if image.mode == "P":
        image = image.convert("RGBA")
      if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.uint16)
      else:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
          image = image.convert("RGB")
        array = np.asarray(image)
    return to_rgb_float(array)
  except (OSError, ValueError, SyntaxError) as error:
    raise FrameReadError(f"{path}: not a readable image ({error})") from error


def resize(frame: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """Float frame ``(H, W, C)`` -> ``(size, size, C)`` or ``(height, width, C)`` for a pair.

  Anti-aliased bilinear (PIL's, per channel in float: no 8-bit rounding); aspect not kept.
  """
  height, width = (size, size) if isinstance(size, int) else size
  frame = np.asarray(frame, np.float32)
  if frame.shape[:2] == (height, width):
    return frame
  channels = [
    np.asarray(Image.fromarray(frame[..., c], mode="F").resize((width, height), Image.BILINEAR))
    for c in range(frame.shape[-1])
  ]
  return np.stack(channels, axis=-1).astype(np.float32)


def is_video_entry(path: str) -> bool:
  """A video file of a known type, or a folder (a frame folder, whatever its name)."""
  return os.path.isdir(path) or path.lower().endswith(VIDEO_SUFFIXES)


def frame_files(folder: str) -> list[str]:
  """Sorted image files of a frame folder."""
  return sorted(
    os.path.join(folder, name)
    for name in os.listdir(folder)
    if name.lower().endswith(IMAGE_SUFFIXES)
  )


def _decode_video(path: str, wanted: set[int] | None) -> dict[int, np.ndarray]:
  import av

  frames: dict[int, np.ndarray] = {}
  last = max(wanted) if wanted else None
  try:
    with av.open(path) as container:
      for index, frame in enumerate(container.decode(video=0)):
        if wanted is None or index in wanted:
          frames[index] = to_rgb_float(frame.to_ndarray(format="rgb24"))
        if last is not None and index >= last:
          break
  except (av.error.FFmpegError, OSError, ValueError) as error:
    raise FrameReadError(f"{path}: not a readable video ({error})") from error
  return frames


def count_frames(path: str) -> int:
  """Number of frames of a frame folder or a video file (decodes the video if its header lies)."""
  if os.path.isdir(path):
    return len(frame_files(path))
  import av

  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      if stream.frames:
        return int(stream.frames)
      return sum(1 for _ in container.decode(video=0))
  except (av.error.FFmpegError, OSError, ValueError, IndexError) as error:
    raise FrameReadError(f"{path}: not a readable video ({error})") from error


def read_frames(path: str, indices: Sequence[int]) -> list[np.ndarray]:
  """The frames at ``indices`` (any order, repeats allowed) of a frame folder or video file."""
  if os.path.isdir(path):
    files = frame_files(path)
    try:
      return [read_image(files[i]) for i in indices]
    except IndexError as error:
      raise FrameReadError(f"{path}: has {len(files)} frames, asked for {list(indices)}") from error
  decoded = _decode_video(path, set(indices))
  missing = [i for i in indices if i not in decoded]
  if missing:
    raise FrameReadError(f"{path}: has no frames {missing} (decoded {len(decoded)})")
  return [decoded[i] for i in indices]
