"""Animate a source portrait with a driving video.

  python -m mmfa_jax.animate --checkpoint DIR --source face.png --driving talk.mp4 \\
      --output out.mp4 [--mode relative|absolute] [--adapt-scale] [--yaw 20] [--crop]
      [--side-by-side] [--batch-size 8]

The driving input is a video file (mp4, mov, webm, gif, ...), a folder of frames or one image.
The output keeps the driving video's exact frame rate (29.97 stays 30000/1001) and its audio
track. Without ``--crop`` the model sees the centre square of each input, resized; with it, the
face is found in the source and in the driving video (one crop for the whole video), and the
result is pasted back into the full source frame with a feathered edge. Bad input: one ``error:``
line naming the file, exit status 2, no output.
"""

from __future__ import annotations

import argparse
import collections
import sys
from collections.abc import Iterator, Sequence
from fractions import Fraction

import numpy as np

from mmfa_jax import cli
from mmfa_jax.data.video import iter_frames, probe


def parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m mmfa_jax.animate",
    description="Animate a source portrait with a driving video.",
  )
  cli.add_model_arguments(parser)
  parser.add_argument("--source", required=True, help="source image (or a video's first frame)")
  parser.add_argument("--driving", required=True, help="driving video, frame folder or image")
  cli.add_output_arguments(parser)
  parser.add_argument(
    "--mode",
    choices=("relative", "absolute"),
    default="relative",
    help="relative: the source's pose moved as the driver moves from its first frame",
  )
  parser.add_argument("--adapt-scale", "--adapt_scale", action="store_true",
                      help="scale the motion by the source/driver face size ratio")  # fmt: skip
  for angle in ("yaw", "pitch", "roll"):
    parser.add_argument(f"--{angle}", type=float, help=f"fixed {angle} in degrees (free view)")
  parser.add_argument("--side-by-side", "--side_by_side", action="store_true",
                      help="write source | driving | result")  # fmt: skip
  parser.add_argument("--no-audio", "--no_audio", action="store_true",
                      help="do not copy the driving video's audio")  # fmt: skip
  cli.add_crop_arguments(parser)
  return parser


def animate(args: argparse.Namespace) -> None:
  driving = probe(args.driving)
  cli.output_kind(args.output, driving.frames)  # refuse a bad output before any work
  animator = cli.load_animator(args)
  num_kp = animator.model_config.get("num_kp", 4)
  if animator.variant.convex_hull_scale("relative", args.adapt_scale) and num_kp < 4:
    raise cli.CommandError(
      f"{args.checkpoint}: --adapt-scale needs at least 4 keypoints (a 3D convex hull); this "
      f"model has {num_kp}"
    )
  source = cli.load_source(args.source, animator.image_size, args.crop, args.margin)
  window = cli.video_crop(driving, args.crop, args.margin, args.detect_every)
  shown: collections.deque[np.ndarray] = collections.deque()  # driving frames awaiting results

  def model_inputs() -> Iterator[np.ndarray]:
    for frame in iter_frames(args.driving):
      if frame.shape[:2] != (driving.height, driving.width):
        raise cli.CommandError(
          f"{args.driving}: frames change size ({frame.shape[1]}x{frame.shape[0]} after "
          f"{driving.width}x{driving.height})"
        )
      image = window.crop(frame, animator.image_size)
      if args.side_by_side:
        shown.append(frame if args.crop else image)
      yield image

  def outputs() -> Iterator[np.ndarray]:
    generated = animator.iter_animate(
      source.image,
      model_inputs(),
      mode=args.mode,
      adapt_scale=args.adapt_scale,
      yaw=args.yaw,
      pitch=args.pitch,
      roll=args.roll,
    )
    for result in generated:
      frame = source.compose(result, args.feather)
      if args.side_by_side:
        frame = cli.side_by_side([source.shown, shown.popleft(), frame])
      yield frame

  fps = driving.fps or Fraction(args.fps or cli.DEFAULT_FPS)
  cli.write_frames(
    args.output,
    outputs(),
    count=driving.frames,
    fps=fps,
    audio_from=args.driving if driving.has_audio and not args.no_audio else None,
    desc="animating",
  )


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(animate, parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
