"""Built-in synthetic talking heads: procedurally rendered, deterministic, with ground-truth motion.

Each video has an identity (head shape, skin and feature colours, background) and per-frame
motion: head pose (yaw, pitch, roll in degrees, the ``ops.rotation`` convention), translation
(x, y in normalised image units), scale, and expression (mouth open, smile, eye blink, brow raise,
each in [0, 1] or [-1, 1]). Motion varies smoothly (sums of sinusoids with random phases).

The head is an ellipsoid ray-cast under orthographic projection and Lambert-shaded so depth reads;
eyes, brows, nose and mouth are painted on its surface in head coordinates, so they turn with the
head. Frames are ``(H, W, 3)`` float32 RGB in [0, 1], rendered at 2x and averaged (anti-aliasing).
Everything is a pure function of ``(seed, video_index, frame_index)``: any frame is rendered on its
own, in any order, at any resolution.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

EXPRESSIONS = ("mouth_open", "smile", "blink", "brow_raise")
FRAMES_PER_PERIOD = 64.0  # each motion completes 0.5 to 2 cycles every 64 frames
# The seed of held-out identities (evaluation, the pose network's held-out error): training data
# seeds are small, so these heads are never seen in training.
HELD_OUT_SEED = 1_000_003


@dataclasses.dataclass(frozen=True)
class Identity:
  """Head radii (x, y, z), skin / feature / background colours (RGB in [0, 1])."""

  radii: tuple[float, float, float]
  skin: tuple[float, float, float]
  features: tuple[float, float, float]
  lips: tuple[float, float, float]
  background: tuple[float, float, float]


def _identity(rng: np.random.Generator) -> Identity:
  skin = rng.uniform([0.45, 0.3, 0.2], [0.95, 0.8, 0.7])
  background = rng.uniform(0.0, 1.0, 3)
  if np.abs(background - skin).sum() < 0.6:  # keep the head visible against the background
    background = 1.0 - skin
  return Identity(
    radii=tuple(rng.uniform([0.42, 0.55, 0.4], [0.55, 0.7, 0.5])),
    skin=tuple(skin),
    features=tuple(rng.uniform(0.0, 0.25, 3)),
    lips=tuple(rng.uniform([0.5, 0.05, 0.1], [0.9, 0.3, 0.35])),
    background=tuple(background),
  )


class SyntheticHeads:
  """A deterministic collection of synthetic talking-head videos.

  Args:
    seed: collection seed.
    num_videos: number of videos (identities; one video per identity).
    num_frames: frames per video.
    max_yaw, max_pitch, max_roll: pose amplitudes in degrees.
  """

  def __init__(
    self,
    seed: int = 0,
    num_videos: int = 64,
    num_frames: int = 64,
    max_yaw: float = 35.0,
    max_pitch: float = 20.0,
    max_roll: float = 15.0,
  ):
    self.seed = seed
    self.num_videos = num_videos
    self.num_frames = num_frames
    self.amplitudes = {"yaw": max_yaw, "pitch": max_pitch, "roll": max_roll}

  def _video_rng(self, video: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([self.seed, video, stream])

  def identity(self, video: int) -> Identity:
    return _identity(self._video_rng(video, 0))

  def motion(self, video: int, frame: int) -> dict[str, float]:
    """Ground-truth motion of one frame (degrees, normalised units, expression levels)."""
    rng = self._video_rng(video, 1)
    t = frame / FRAMES_PER_PERIOD
    values = {}
    names = ("yaw", "pitch", "roll", "tx", "ty", "scale", *EXPRESSIONS)
    for name in names:
      frequency = rng.uniform(0.5, 2.0)
      phase = rng.uniform(0, 2 * math.pi)
      wave = math.sin(2 * math.pi * frequency * t + phase)
      if name in self.amplitudes:
        values[name] = self.amplitudes[name] * wave
      elif name in ("tx", "ty"):
        values[name] = 0.12 * wave
      elif name == "scale":
        values[name] = 1.0 + 0.12 * wave
      elif name == "smile":
        values[name] = wave
      elif name == "blink":
        values[name] = max(0.0, wave) ** 8  # mostly open, brief blinks
      else:
        values[name] = 0.5 + 0.5 * wave
    return values

  def frame(self, video: int, frame: int, size: int = 256) -> np.ndarray:
    """``(size, size, 3)`` float32 RGB in [0, 1]."""
    return render_head(self.identity(video), self.motion(video, frame), size)

  def video(self, video: int, size: int = 256) -> np.ndarray:
    """``(num_frames, size, size, 3)``."""
    return np.stack([self.frame(video, f, size) for f in range(self.num_frames)])


# Points painted on every head, in normalised face coordinates (u across, v down; the renderer's
# ``q / radii``): pupils, brow centres, nose, mouth corners and centre at rest, chin, forehead.
FACE_POINTS = (
  ("left_pupil", -0.38, -0.12),
  ("right_pupil", 0.38, -0.12),
  ("left_brow", -0.38, -0.42),
  ("right_brow", 0.38, -0.42),
  ("nose", 0.0, 0.12),
  ("left_mouth", -0.3, 0.45),
  ("right_mouth", 0.3, 0.45),
  ("mouth", 0.0, 0.45),
  ("chin", 0.0, 0.8),
  ("forehead", 0.0, -0.7),
)


def face_points(identity: Identity, motion: dict[str, float]) -> np.ndarray:
  """``(len(FACE_POINTS), 3)`` float32: where ``FACE_POINTS`` lie on this head's surface in one
  frame, in the renderer's camera coordinates: x right and y down in [-1, 1] image units (the
  image's edges; pixel i's centre at ``(2 i + 1) / size - 1``), z towards the camera, same units.
  Rigid motion only (pose, scale, translation): the points do not follow expressions."""
  radii = np.asarray(identity.radii)
  uv = np.asarray([(u, v) for _, u, v in FACE_POINTS])
  front = np.sqrt(np.clip(1 - np.sum(uv**2, -1), 0, 1))  # on the ellipsoid, facing the camera
  local = np.concatenate([uv, front[:, None]], -1) * radii  # (P, 3) head coordinates
  rotation = _rotation(motion["yaw"], motion["pitch"], motion["roll"])
  camera = motion["scale"] * local @ rotation.T + np.array([motion["tx"], motion["ty"], 0.0])
  return camera.astype(np.float32)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
  """R = R_pitch(x) R_yaw(y) R_roll(z), degrees (same convention as ops.rotation)."""
  y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
  rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
  ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
  rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
  return rx @ ry @ rz


def _soft_inside(distance: np.ndarray, softness: float = 0.08) -> np.ndarray:
  """1 inside (distance < 1), 0 outside, with a soft edge."""
  return np.clip((1 - distance) / softness + 0.5, 0.0, 1.0)


def render_head(identity: Identity, motion: dict[str, float], size: int = 256) -> np.ndarray:
  """Renders one frame; see the module docstring for the conventions."""
  n = 2 * size  # supersampled
  coords = (np.arange(n) + 0.5) / n * 2 - 1
  px, py = np.meshgrid(coords, coords)  # x along width, y along height (down)
  rotation = _rotation(motion["yaw"], motion["pitch"], motion["roll"])
  scale = motion["scale"]
  radii = np.asarray(identity.radii)
  # Camera looks along -z from +z; ray p = (x, y, z). Head-local q = R^T (p - t) / s.
  offset = np.stack([px - motion["tx"], py - motion["ty"], np.zeros_like(px)], -1)
  base = offset @ rotation / scale  # (n, n, 3) = R^T offset / s (row vectors)
  direction = rotation[2] / scale  # d q / d z
  a = np.sum((direction / radii) ** 2)
  b = 2 * np.sum(base * direction / radii**2, -1)
  c = np.sum((base / radii) ** 2, -1) - 1
  disc = b * b - 4 * a * c
  hit = disc > 0
  z = (-b + np.sqrt(np.maximum(disc, 0))) / (2 * a)  # the root nearest the camera (largest z)
  q = base + z[..., None] * direction  # surface point, head coordinates (x right, y down, z front)
  normal_local = q / radii**2
  normal = normal_local @ rotation.T  # back to camera coordinates
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
  light = np.array([-0.4, -0.5, 0.77])
  shade = 0.35 + 0.65 * np.clip(normal @ light, 0, 1)  # Lambert with ambient

  color = np.broadcast_to(np.asarray(identity.skin), (n, n, 3)) * shade[..., None]
  u, v = q[..., 0] / radii[0], q[..., 1] / radii[1]  # normalised face coordinates
  front = (q[..., 2] > 0).astype(np.float64)

  def paint(mask: np.ndarray, rgb: tuple[float, float, float]) -> None:
    nonlocal color
    mask = (mask * front)[..., None]
    color = color * (1 - mask) + np.asarray(rgb) * shade[..., None] * mask

  blink = motion["blink"]
  eye_open = max(0.08, 1.0 - blink)
  for side in (-1, 1):
    eye = np.hypot((u - side * 0.38) / 0.17, (v + 0.12) / (0.1 * eye_open))
    paint(_soft_inside(eye), (0.95, 0.95, 0.95))
    pupil = np.hypot((u - side * 0.38) / 0.07, (v + 0.12) / (0.07 * eye_open))
    paint(_soft_inside(pupil), identity.features)
    brow_y = -0.36 - 0.12 * motion["brow_raise"]
    brow = np.hypot((u - side * 0.38) / 0.22, (v - brow_y) / 0.04)
    paint(_soft_inside(brow), identity.features)
  nose = np.hypot(u / 0.1, (v - 0.12) / 0.16)
  paint(_soft_inside(nose) * 0.5, tuple(0.75 * np.asarray(identity.skin)))
  smile = motion["smile"]
  centre = 0.45 - 0.12 * smile * (u / 0.35) ** 2  # corners up for a smile
  mouth_height = 0.03 + 0.16 * motion["mouth_open"]
  mouth = np.hypot(u / 0.35, (v - centre) / mouth_height)
  paint(_soft_inside(mouth), identity.lips)
  inner = np.hypot(u / 0.3, (v - centre) / max(1e-3, mouth_height - 0.03))
  paint(_soft_inside(inner) * min(1.0, motion["mouth_open"] * 3), (0.1, 0.02, 0.03))

  # Background: a soft vertical gradient; the head edge is anti-aliased by the 2x supersampling.
  gradient = 0.85 + 0.15 * (1 - (py + 1) / 2)
  background = np.asarray(identity.background) * gradient[..., None]
  image = np.where(hit[..., None], color, background)
  image = image.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
  return np.clip(image, 0, 1).astype(np.float32)
