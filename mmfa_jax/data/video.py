"""Frames in and out: image files (any mode), frame folders and video files (PyAV).

Every reader returns ``(H, W, 3)`` float32 RGB in [0, 1]: grayscale is repeated, alpha dropped,
16-bit scaled by 1/65535, palette images converted. Errors are ``FrameReadError`` naming the file.
``probe`` and ``iter_frames`` stream any input (image, folder, video); ``VideoWriter`` and
``write_image`` write outputs atomically (a staging file renamed once complete), keeping the exact
frame rate and copying an audio track.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from absl import logging
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
    if not np.isfinite(values).all():
      raise ValueError("non-finite pixel values (NaN or infinity)")
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


def as_image(image: Any, size: int, name: str = "image") -> np.ndarray:
  """An RGB, gray or RGBA image (uint8, uint16 or float in [0, 1]) -> float32 ``(size, size, 3)``.

  Conversion by ``to_rgb_float``; other sizes are resized (``resize``,
  anti-aliased bilinear, aspect not kept: crop first to keep it), which is logged.
  """
  array = np.asarray(image)
  if array.ndim not in (2, 3):
    raise ValueError(f"{name}: want an (H, W, 3) RGB image, got shape {array.shape}")
  try:
    array = to_rgb_float(array)
  except ValueError as error:
    raise ValueError(f"{name}: {error} (shape {array.shape})") from error
  if array.shape[:2] != (size, size):
    logging.info(
      "%s: resized from %dx%d to %dx%d", name, array.shape[1], array.shape[0], size, size
    )
    array = resize(array, size)
  return np.clip(array, 0.0, 1.0)


MAX_IMAGE_PIXELS = 8192 * 8192  # larger images are refused before their pixels are decoded


def read_image(path: str) -> np.ndarray:
  """One image file -> float32 RGB (H, W, 3) in [0, 1]. Images whose header declares more than
  ``MAX_IMAGE_PIXELS`` are refused before anything is decoded (decompression bombs)."""
  try:
    with warnings.catch_warnings():  # PIL warns of large images; the size is checked just below
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(path)
    with image:
      width, height = image.size
      if width * height > MAX_IMAGE_PIXELS:
        raise FrameReadError(
          f"{path}: {width} x {height} pixels, more than this reads ({MAX_IMAGE_PIXELS:,}); "
          "resize it first"
        )
      if image.mode == "P":
        image = image.convert("RGBA")
      if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.uint16)
      elif image.mode == "F":  # 32-bit float (TIFF): values taken as [0, 1]
        array = np.asarray(image, dtype=np.float32)
      else:
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
          image = image.convert("RGB")
        array = np.asarray(image)
    return to_rgb_float(array)
  except FrameReadError:
    raise
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
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


def upright(frame: Any) -> np.ndarray:
  """A decoded ``av.VideoFrame`` as float RGB, turned as the file's display matrix says: phones
  store portrait video sideways with a rotation to apply (``frame.rotation``, degrees
  counterclockwise, as FFmpeg reports it; -90 is a quarter turn clockwise)."""
  pixels = frame.to_ndarray(format="rgb24")
  turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
  return to_rgb_float(np.rot90(pixels, turns) if turns else pixels)


def _decode_video(path: str, wanted: set[int] | None) -> dict[int, np.ndarray]:
  import av

  frames: dict[int, np.ndarray] = {}
  last = max(wanted) if wanted else None
  try:
    with av.open(path) as container:
      for index, frame in enumerate(container.decode(video=0)):
        if wanted is None or index in wanted:
          frames[index] = upright(frame)
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


# --------------------------------------------------------------------------------------------
# Any input, streamed


@dataclasses.dataclass(frozen=True)
class MediaInfo:
  """What an input is: ``kind`` image / folder / video, its frame count and size, and for video
  files the exact average frame rate (a ``Fraction``, 30000/1001 for 29.97) and audio presence."""

  path: str
  kind: Literal["image", "folder", "video"]
  frames: int
  width: int
  height: int
  fps: Fraction | None = None
  has_audio: bool = False


def _looks_like_image(path: str) -> bool:
  try:
    with Image.open(path) as image:
      image.verify()
    return True
  except Exception:  # anything PIL cannot open is not an image here
    return False


def probe(path: str | os.PathLike) -> MediaInfo:
  """Opens an image file, a frame folder or a video file far enough to know what it is.

  Raises ``FrameReadError`` naming ``path`` when it is missing, unreadable, neither an image nor
  a video, or holds no frames.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FrameReadError(f"{path}: no such file or folder")
  if os.path.isdir(path):
    files = frame_files(path)
    if not files:
      raise FrameReadError(f"{path}: a folder with no image frames ({', '.join(IMAGE_SUFFIXES)})")
    height, width = read_image(files[0]).shape[:2]
    return MediaInfo(path, "folder", len(files), width, height)
  suffix = os.path.splitext(path)[1].lower()
  if suffix in IMAGE_SUFFIXES or (suffix not in VIDEO_SUFFIXES and _looks_like_image(path)):
    height, width = read_image(path).shape[:2]
    return MediaInfo(path, "image", 1, width, height)
  import av

  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise FrameReadError(f"{path}: has no video stream (no frames)")
      stream = container.streams.video[0]
      fps = stream.average_rate or stream.guessed_rate
      has_audio = bool(container.streams.audio)
      width, height = stream.codec_context.width, stream.codec_context.height
      first = next(container.decode(video=0), None)
      if first is not None and round((getattr(first, "rotation", 0) or 0) / 90) % 2:
        width, height = height, width  # shown a quarter turn round (see ``upright``)
  except FrameReadError:
    raise
  except (av.error.FFmpegError, OSError, ValueError) as error:
    what = "not a readable video" if suffix in VIDEO_SUFFIXES else "not an image or a video"
    raise FrameReadError(f"{path}: {what} ({error})") from error
  frames = count_frames(path)
  if frames == 0:
    raise FrameReadError(f"{path}: a video with no frames")
  return MediaInfo(path, "video", frames, width, height, Fraction(fps) if fps else None, has_audio)


def iter_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
  """Every frame of an image (one), a frame folder or a video file, decoded one at a time."""
  path = os.fspath(path)
  info = probe(path)
  if info.kind == "image":
    yield read_image(path)
  elif info.kind == "folder":
    for file in frame_files(path):
      yield read_image(file)
  else:
    import av

    try:
      with av.open(path) as container:
        for frame in container.decode(video=0):
          yield upright(frame)
    except (av.error.FFmpegError, OSError, ValueError) as error:
      raise FrameReadError(f"{path}: not a readable video ({error})") from error


# The writers live in ``video_writer``; importable from here too (one module for frames in and out).
from mmfa_jax.data.video_writer import (  # noqa: E402, F401
  OUTPUT_FORMATS,
  VideoWriter,
  to_uint8,
  write_image,
)
