"""Edit a portrait's head pose and expression, or sweep one attribute into a video.

  python -m mmfa_jax.edit --checkpoint DIR --source face.png --output turned.png --yaw 20
  python -m mmfa_jax.edit --checkpoint DIR --source face.png --output smile.png \\
      --expression-from smiling.jpg --expression-scale 1.5
  python -m mmfa_jax.edit --checkpoint DIR --source face.png --output sweep.mp4 \\
      --sweep yaw --values=-30:30:61 [--pitch 10]

Angles are in degrees (yaw, pitch, roll; what is not given is kept from the source), ``--scale``
is the projection scale, ``--tx/--ty/--tz`` set translation components in the normalised [-1, 1]
keypoint space, ``--pose-from IMG`` takes the whole pose from another image. ``--sweep ATTR`` moves
one attribute (yaw, pitch, roll, scale, tx, ty, tz, expression_scale) through ``--values``
(``START:STOP:COUNT`` or a comma list) and writes a video or frame folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from mmfa_jax import cli
from mmfa_jax.editing import ATTRIBUTES

SWEEPABLE = (*ATTRIBUTES, "expression_scale")


def parse_values(text: str) -> np.ndarray:
  """``'START:STOP:COUNT'`` (inclusive, evenly spaced) or ``'a,b,c'`` -> float32 values."""
  try:
    if ":" in text:
      start, stop, count = text.split(":")
      if int(count) < 1:
        raise ValueError
      return np.linspace(float(start), float(stop), int(count), dtype=np.float32)
    return np.asarray([float(v) for v in text.split(",")], np.float32)
  except ValueError as error:
    raise cli.CommandError(
      f"--values {text!r}: want START:STOP:COUNT (say -30:30:61) or a comma list"
    ) from error


def parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m mmfa_jax.edit",
    description="Edit a portrait's head pose and expression, or sweep one attribute.",
  )
  cli.add_model_arguments(parser)
  parser.add_argument("--source", required=True, help="the portrait (an image)")
  cli.add_output_arguments(parser)
  edits = parser.add_argument_group("edits (what is not given is kept from the source)")
  for angle in ("yaw", "pitch", "roll"):
    edits.add_argument(f"--{angle}", type=float, help=f"{angle} in degrees")
  edits.add_argument("--scale", type=float, help="projection scale")
  for axis in "xyz":
    edits.add_argument(f"--t{axis}", type=float, help=f"translation {axis}, in [-1, 1] units")
  edits.add_argument("--pose-from", "--pose_from", help="take yaw, pitch, roll, scale and "
                     "translation from this image (single values above still win)")  # fmt: skip
  edits.add_argument("--expression-from", "--expression_from",
                     help="take the expression from this image")  # fmt: skip
  edits.add_argument("--expression-scale", "--expression_scale", type=float, default=1.0,
                     help="multiply the expression deformation (0: neutral)")  # fmt: skip
  sweep = parser.add_argument_group("sweep")
  sweep.add_argument("--sweep", choices=SWEEPABLE, help="the attribute to move")
  sweep.add_argument("--values", help="START:STOP:COUNT or a comma list (with --sweep)")
  cli.add_crop_arguments(parser)
  return parser


def edit(args: argparse.Namespace) -> None:
  if (args.sweep is None) != (args.values is None):
    raise cli.CommandError("--sweep and --values go together")
  values = parse_values(args.values) if args.sweep else None
  count = 1 if values is None else len(values)
  cli.output_kind(args.output, count)
  animator = cli.load_animator(args)
  source = cli.load_source(args.source, animator.image_size, args.crop, args.margin)
  size, face, margin = animator.image_size, args.crop, args.margin
  state = animator.encode_source(source.image)

  edits: dict = {"expression_scale": args.expression_scale}
  if args.pose_from:
    pose = animator.motion(cli.load_source(args.pose_from, size, face, margin).image, state)
    edits.update(yaw=pose.yaw, pitch=pose.pitch, roll=pose.roll, scale=pose.scale,
                 translation=np.asarray(pose.translation[0]))  # fmt: skip
  for name in ("yaw", "pitch", "roll", "scale"):
    if getattr(args, name) is not None:
      edits[name] = getattr(args, name)
  if any(getattr(args, f"t{axis}") is not None for axis in "xyz"):
    base = edits.get("translation", animator.source_motion(state).translation[0])
    translation = np.array(base, np.float32)
    for index, axis in enumerate("xyz"):
      if getattr(args, f"t{axis}") is not None:
        translation[index] = getattr(args, f"t{axis}")
    edits["translation"] = translation
  if args.expression_from:
    edits["expression_from"] = cli.load_source(args.expression_from, size, face, margin).image

  if values is None:
    kp = animator.edit_keypoints(state, **edits)
  else:
    kp = animator.sweep_keypoints(state, args.sweep, values, **edits)
  frames = (source.compose(f, args.feather) for f in cli.unbatch(animator.iter_render(state, kp)))
  cli.write_frames(args.output, frames, count=count, fps=args.fps, desc="rendering")


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(edit, parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
