"""Builds ArrayRecord shards (TF-free TFDS) from a VoxCeleb-style folder of videos.

  python tools/build_dataset.py --input ROOT --output DIR [--image_size 256] [--quality 95]

ROOT/train and ROOT/test hold one entry per video: a video file (.mp4, .gif, ...) or a folder of
frames. Unreadable videos are skipped with a warning and listed at the end. Exit 2 on bad input.
"""

from __future__ import annotations

import sys

from absl import app, flags

from mmfa_jax.data.arrayrecord import build_dataset

_INPUT = flags.DEFINE_string("input", None, "Root folder with train/ and test/.")
_OUTPUT = flags.DEFINE_string("output", None, "Output data_dir.")
_SIZE = flags.DEFINE_integer("image_size", 256, "Frame size stored (square).")
_QUALITY = flags.DEFINE_integer("quality", 95, "JPEG quality.")


def main(argv: list[str]) -> None:
  del argv
  if not _INPUT.value or not _OUTPUT.value:
    print("error: --input ROOT and --output DIR are required", file=sys.stderr)
    sys.exit(2)
  try:
    index = build_dataset(_INPUT.value, _OUTPUT.value, _SIZE.value, _QUALITY.value)
  except (ValueError, FileNotFoundError) as error:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  print(f"built {index['data_dir']}")
  for split, info in index["splits"].items():
    videos = len(info["num_frames"])
    print(
      f"  {split}: {videos} videos, {len(info['identities'])} identities, {sum(info['num_frames'])} frames"
    )
    for path in info["skipped"]:
      print(f"    skipped (unreadable): {path}")


if __name__ == "__main__":
  app.run(main)
