"""Frames out, atomically: ``write_image`` and ``VideoWriter`` write to a staging file or folder
beside the output and rename it once complete; ``VideoWriter`` keeps the exact frame rate and copies
an audio track. (Readers: ``mmfa_jax.data.video``, which also re-exports these.)
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
from absl import logging
from PIL import Image

from mmfa_jax.atomic import discard, move_into_place, staged, staging_name

# Containers ``VideoWriter`` writes: (PyAV format, video codec, pixel format, audio codec or None).
OUTPUT_FORMATS = {
  ".mp4": ("mp4", "libx264", "yuv420p", "aac"),
  ".mov": ("mov", "libx264", "yuv420p", "aac"),
  ".mkv": ("matroska", "libx264", "yuv420p", "aac"),
  ".webm": ("webm", "libvpx-vp9", "yuv420p", "libopus"),
  ".gif": ("gif", "gif", "rgb8", None),
}


def to_uint8(frame: np.ndarray) -> np.ndarray:
  """Float RGB [0, 1] -> uint8 (rounded)."""
  return (np.clip(np.asarray(frame, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def write_image(path: str | os.PathLike, frame: np.ndarray) -> str:
  """One float RGB frame to an image file (format by suffix), atomically."""
  path = os.fspath(path)
  with staged(path) as staging:
    Image.fromarray(to_uint8(frame)).save(
      staging, format=Image.registered_extensions()[os.path.splitext(path)[1].lower()]
    )
  return path


class VideoWriter:
  """Frames to a video file (.mp4/.mov/.mkv: H.264; .webm: VP9; .gif) or, for a path without a
  suffix, PNG frames in a folder. Nothing appears at ``path`` until ``close``: frames go to a
  staging file beside it, which ``close`` renames and ``abort`` (or an exception in a ``with``
  block) removes.

  Args:
    path: output file or folder.
    fps: frame rate, exact (``Fraction(30000, 1001)`` stays 29.97; GIF rounds to 1/100 s).
    audio_from: a video file whose first audio track is copied (re-encoded where the container
      cannot hold its codec); ignored for GIF and folders, with a log line.
    crf: H.264/VP9 quality (lower is better).
  """

  def __init__(
    self,
    path: str | os.PathLike,
    fps: Fraction | float,
    *,
    audio_from: str | None = None,
    crf: int = 18,
  ):
    self.path = os.fspath(path)
    self.fps = Fraction(fps).limit_denominator(1_000_000)
    if self.fps <= 0:
      raise ValueError(f"{self.path}: frame rate must be positive, got {fps}")
    suffix = os.path.splitext(self.path)[1].lower()
    if suffix and suffix not in OUTPUT_FORMATS:
      raise ValueError(
        f"{self.path}: cannot write {suffix!r} video; use {', '.join(OUTPUT_FORMATS)} or a folder"
      )
    self.format = OUTPUT_FORMATS.get(suffix)
    self.audio_from = audio_from
    self.crf = crf
    self.frames = 0
    self._staging = staging_name(self.path)
    os.makedirs(os.path.dirname(self._staging), exist_ok=True)
    self._container = None
    self._video = None
    self._audio = None  # (input container, input stream, output stream, transcode)
    if self.format is None:
      os.makedirs(self._staging)
      if audio_from:
        logging.info("%s: a frame folder holds no audio; the audio track is not copied", path)
    elif self.format[3] is None and audio_from:
      logging.info("%s: GIF holds no audio; the audio track is not copied", path)

  def __enter__(self) -> VideoWriter:
    return self

  def __exit__(self, kind, value, traceback) -> None:
    if kind is None:
      self.close()
    else:
      self.abort()

  def _open(self, height: int, width: int) -> None:
    import av

    container_format, codec, pixel_format, audio_codec = self.format
    self._container = av.open(self._staging, "w", format=container_format)
    video = self._container.add_stream(codec, rate=self.fps)
    video.width, video.height, video.pix_fmt = width, height, pixel_format
    if codec != "gif":
      video.options = {"crf": str(self.crf)}
      if codec == "libvpx-vp9":
        video.options = {"crf": str(self.crf + 12), "b": "0"}
    self._video = video
    if self.audio_from and audio_codec:
      source = av.open(self.audio_from)
      if not source.streams.audio:
        source.close()
        return
      stream = source.streams.audio[0]
      try:
        self._audio = (source, stream, self._container.add_stream_from_template(stream), False)
      except ValueError:  # the container cannot hold this codec: re-encode
        rate = stream.rate if audio_codec != "libopus" else 48000
        out = self._container.add_stream(audio_codec, rate=rate)
        out.layout = stream.layout.name
        self._audio = (source, stream, out, True)

  def write(self, frame: np.ndarray) -> None:
    """Appends one float RGB ``(H, W, 3)`` frame in [0, 1] (every frame the same size)."""
    pixels = to_uint8(frame)
    if self.format is None:
      Image.fromarray(pixels).save(os.path.join(self._staging, f"{self.frames:07d}.png"))
      self.frames += 1
      return
    import av

    if self._container is None:
      height, width = pixels.shape[:2]
      if self.format[2] == "yuv420p" and (height % 2 or width % 2):
        logging.info("%s: padded %dx%d to even sides for yuv420p", self.path, width, height)
      self._open(height + height % 2 * (self.format[2] == "yuv420p"),
                 width + width % 2 * (self.format[2] == "yuv420p"))  # fmt: skip
    pad = (self._video.height - pixels.shape[0], self._video.width - pixels.shape[1])
    if pad != (0, 0):
      pixels = np.pad(pixels, ((0, pad[0]), (0, pad[1]), (0, 0)), mode="edge")
    video_frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    video_frame.pts = self.frames
    video_frame.time_base = 1 / self.fps
    for packet in self._video.encode(video_frame):
      self._container.mux(packet)
    self.frames += 1

  def _copy_audio(self) -> None:
    import av

    source, stream, out, transcode = self._audio
    if not transcode:
      for packet in source.demux(stream):
        if packet.dts is not None:
          packet.stream = out
          self._container.mux(packet)
      return
    resampler = av.AudioResampler(format=out.codec_context.format, layout=out.layout, rate=out.rate)
    for frame in source.decode(stream):
      for converted in resampler.resample(frame):
        converted.pts = None
        for packet in out.encode(converted):
          self._container.mux(packet)
    for converted in resampler.resample(None):
      converted.pts = None
      for packet in out.encode(converted):
        self._container.mux(packet)
    for packet in out.encode(None):
      self._container.mux(packet)

  def close(self) -> str:
    """Finishes the file (flushes the encoder, copies the audio) and moves it to ``path``."""
    if self.frames == 0:
      self.abort()
      raise ValueError(f"{self.path}: no frames were written")
    try:
      if self._container is not None:
        for packet in self._video.encode(None):
          self._container.mux(packet)
        if self._audio is not None:
          self._copy_audio()
        self._container.close()
        self._container = None
    except BaseException:
      self.abort()
      raise
    finally:
      if self._audio is not None:
        self._audio[0].close()
        self._audio = None
    move_into_place(self._staging, self.path)
    return self.path

  def abort(self) -> None:
    """Drops what was written; ``path`` is left as it was."""
    if self._container is not None:
      try:
        self._container.close()
      except Exception:  # a half-written file may not close; it is removed
        pass
      self._container = None
    if self._audio is not None:
      self._audio[0].close()
      self._audio = None
    discard(self._staging)
