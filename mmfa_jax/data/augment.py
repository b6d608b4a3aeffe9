"""The reference's joint augmentation of a (source, driving) pair (architecture.md 9.3).

With probability 0.5 the time order is reversed (the pair is swapped); otherwise, with probability
0.5, both frames are flipped horizontally (the reference's early return means the two never happen
together). Then one colour jitter for both frames: brightness, contrast and saturation factors in
[1 - j, 1 + j], hue shift in [-j, j] (j = 0.1), the four in random order. Frames are float32 RGB in
[0, 1]; the jitter follows torchvision's definitions (gray = 0.299 R + 0.587 G + 0.114 B).
"""

from __future__ import annotations

import numpy as np


def _gray(image: np.ndarray) -> np.ndarray:
  return (image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]


def adjust_brightness(image: np.ndarray, factor: float) -> np.ndarray:
  return np.clip(image * factor, 0, 1)


def adjust_contrast(image: np.ndarray, factor: float) -> np.ndarray:
  mean = _gray(image).mean()
  return np.clip((image - mean) * factor + mean, 0, 1)


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
  gray = _gray(image)
  return np.clip((image - gray) * factor + gray, 0, 1)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """RGB [0, 1] -> HSV, hue in [0, 1)."""
  r, g, b = image[..., 0], image[..., 1], image[..., 2]
  maximum, minimum = image.max(-1), image.min(-1)
  delta = maximum - minimum
  safe = np.where(delta > 0, delta, 1)
  hue = np.where(
    maximum == r,
    ((g - b) / safe) % 6,
    np.where(maximum == g, (b - r) / safe + 2, (r - g) / safe + 4),
  )
  hue = np.where(delta > 0, hue / 6, 0)
  saturation = np.where(maximum > 0, delta / np.where(maximum > 0, maximum, 1), 0)
  return np.stack([hue % 1.0, saturation, maximum], -1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """HSV (hue in [0, 1)) -> RGB [0, 1]."""
  hue, saturation, value = hsv[..., 0] * 6, hsv[..., 1], hsv[..., 2]
  sector = np.floor(hue).astype(np.int32) % 6
  fraction = hue - np.floor(hue)
  p = value * (1 - saturation)
  q = value * (1 - saturation * fraction)
  t = value * (1 - saturation * (1 - fraction))
  choices = [
    (value, t, p),
    (q, value, p),
    (p, value, t),
    (p, q, value),
    (t, p, value),
    (value, p, q),
  ]
  channels = [np.choose(sector, [c[i] for c in choices]) for i in range(3)]
  return np.stack(channels, -1)


def adjust_hue(image: np.ndarray, shift: float) -> np.ndarray:
  hsv = rgb_to_hsv(image)
  hsv[..., 0] = (hsv[..., 0] + shift) % 1.0
  return np.clip(hsv_to_rgb(hsv), 0, 1)


def augment_pair(
  source: np.ndarray, driving: np.ndarray, rng: np.random.Generator, jitter: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
  """Flip / time-flip and one shared colour jitter; returns float32 frames."""
  if rng.random() < 0.5:
    source, driving = driving, source
  elif rng.random() < 0.5:
    source, driving = source[:, ::-1], driving[:, ::-1]
  ops = [
    (adjust_brightness, rng.uniform(1 - jitter, 1 + jitter)),
    (adjust_contrast, rng.uniform(1 - jitter, 1 + jitter)),
    (adjust_saturation, rng.uniform(1 - jitter, 1 + jitter)),
    (adjust_hue, rng.uniform(-jitter, jitter)),
  ]
  for position in rng.permutation(len(ops)):
    op, value = ops[position]
    source, driving = op(source, value), op(driving, value)
  return np.ascontiguousarray(source, np.float32), np.ascontiguousarray(driving, np.float32)
