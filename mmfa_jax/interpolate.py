"""Move a portrait's expression through the expression VAE (MMFA runs with a trained VAE).

  python -m mmfa_jax.interpolate --checkpoint VAE_RUN --source face.png \\
      --from-image neutral.jpg --to-image laugh.jpg --steps 32 --output morph.mp4
  python -m mmfa_jax.interpolate --checkpoint VAE_RUN --source face.png --sample 8 --seed 0 \\
      --output samples.png

``--from-image/--to-image``: the source's face going from one image's expression to the other's
along the VAE latent line (the head pose stays the source's). ``--sample N``: N expressions drawn
from the VAE prior. An image output holds all frames side by side; a video or folder one per frame.
``--checkpoint`` is the expression-VAE run's workdir (its MMFA run is loaded with it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from mmfa_jax import cli
from mmfa_jax.data.video import IMAGE_SUFFIXES


def parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m mmfa_jax.interpolate",
    description="Interpolate or sample a portrait's expression through the expression VAE.",
  )
  cli.add_model_arguments(parser)
  parser.add_argument("--source", required=True, help="the portrait (an image)")
  cli.add_output_arguments(parser)
  parser.add_argument("--from-image", "--from_image", help="expression at the start")
  parser.add_argument("--to-image", "--to_image", help="expression at the end")
  parser.add_argument("--steps", type=int, default=16, help="frames from start to end (>= 2)")
  parser.add_argument("--sample", type=int, help="draw this many expressions instead")
  parser.add_argument("--seed", type=int, default=0, help="random seed of --sample")
  cli.add_crop_arguments(parser)
  return parser


def interpolate(args: argparse.Namespace) -> None:
  pair = (args.from_image, args.to_image)
  if (args.sample is None) == all(p is None for p in pair) or (None in pair and any(pair)):
    raise cli.CommandError("give --from-image and --to-image, or --sample N")
  count, least = (args.sample, 1) if args.sample is not None else (args.steps, 2)
  if count < least:
    raise cli.CommandError(f"need at least {least} frames, got {count}")
  strip = os.path.splitext(args.output)[1].lower() in IMAGE_SUFFIXES
  cli.output_kind(args.output, 1 if strip else count)
  animator = cli.load_animator(args, variant="mmfa")
  animator.require_vae()  # a run without a VAE is refused before any further work
  size, face, margin = animator.image_size, args.crop, args.margin
  source = cli.load_source(args.source, size, face, margin)
  if args.sample is not None:
    frames = animator.sample_expressions(source.image, args.sample, args.seed)
  else:
    start = cli.load_source(args.from_image, size, face, margin).image
    end = cli.load_source(args.to_image, size, face, margin).image
    frames = animator.interpolate_expression(source.image, start, end, args.steps)
  frames = [source.compose(f, args.feather) for f in frames]
  if strip:
    cli.write_frames(args.output, [cli.side_by_side(frames)], count=1)
  else:
    cli.write_frames(args.output, frames, count=count, fps=args.fps, desc="writing")


def main(argv: Sequence[str] | None = None) -> int:
  return cli.run(interpolate, parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
