"""Finds the face in arbitrary videos and writes 256 px square crops in the training layout.

  python tools/prepare_videos.py --input DIR --output ROOT [--split train] [--size 256]
      [--margin 0.25] [--min_frames 16] [--detect_every 5]

Writes ROOT/SPLIT/<video name>.mp4/0000000.png ... (one frame folder per clip), shows a progress
bar and ends with a summary of skipped clips. Exit 2 when DIR holds no video or nothing usable.
Needs the ``video`` extra (PyAV, OpenCV).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from tqdm import tqdm

from mmfa_jax.data.prepare import find_videos, prepare_clip

_INPUT = flags.DEFINE_string("input", None, "Folder of videos (searched recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Dataset root to write.")
_SPLIT = flags.DEFINE_string("split", "train", "Split folder under the root.")
_SIZE = flags.DEFINE_integer("size", 256, "Output frame size.")
_MARGIN = flags.DEFINE_float("margin", 0.25, "Margin around the face box, per side, as a fraction.")
_MIN_FRAMES = flags.DEFINE_integer("min_frames", 16, "Shorter clips are skipped.")
_DETECT_EVERY = flags.DEFINE_integer("detect_every", 5, "Run the face detector every N frames.")


def main(argv: list[str]) -> None:
  del argv
  if not _INPUT.value or not _OUTPUT.value:
    print("error: --input DIR and --output ROOT are required", file=sys.stderr)
    sys.exit(2)
  if not os.path.isdir(_INPUT.value):
    what = "a file, not a folder of videos" if os.path.exists(_INPUT.value) else "no such folder"
    print(f"error: {_INPUT.value}: {what}", file=sys.stderr)
    sys.exit(2)
  videos = find_videos(_INPUT.value)
  if not videos:
    print(f"error: {_INPUT.value}: no video files", file=sys.stderr)
    sys.exit(2)
  results = [
    prepare_clip(
      path,
      _OUTPUT.value,
      _SPLIT.value,
      _SIZE.value,
      _MARGIN.value,
      _MIN_FRAMES.value,
      _DETECT_EVERY.value,
    )
    for path in tqdm(videos, desc="clips", unit="clip")
  ]
  written = [r for r in results if r.output]
  print(
    f"wrote {len(written)} of {len(results)} clips to {os.path.join(_OUTPUT.value, _SPLIT.value)}"
  )
  for result in results:
    if result.skipped:
      print(f"  skipped {result.source}: {result.skipped}")
  if not written:
    print("error: no usable clip", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
