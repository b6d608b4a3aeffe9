"""What the animate, edit and interpolate commands share.

Argument groups (checkpoint, face crop), input checks, the source image and its crop, output
files, and the error handling: a bad input (missing or unreadable file, not an image or video, no
frames, no face with ``--crop``, a directory that is not a model checkpoint or not of the variant
needed) prints one ``error:`` line naming the file and exits with status 2. Outputs are written to
a staging file and renamed when complete, so a failed run leaves nothing (and an older output of
the same name stays as it was).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction

import flax.errors
import numpy as np
from absl import logging
from tqdm import tqdm

from mmfa_jax.checkpoints import ConvertedWeightsError
from mmfa_jax.compilation_cache import enable_compilation_cache
from mmfa_jax.console import configure_console
from mmfa_jax.data.faces import FaceCrop, find_face_crop
from mmfa_jax.data.video import (
  IMAGE_SUFFIXES,
  OUTPUT_FORMATS,
  FrameReadError,
  MediaInfo,
  VideoWriter,
  iter_frames,
  probe,
  resize,
  write_image,
)

DEFAULT_FPS = 25


class CommandError(ValueError):
  """A bad input or option, reported as one line and exit status 2."""


USER_ERRORS = (CommandError, FrameReadError, ConvertedWeightsError)


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser,
        argv: Sequence[str] | None = None) -> int:  # fmt: skip
  """Parses ``argv``, runs ``main``; returns the exit status (2 for bad input, said on stderr)."""
  if not any("--verbosity" in action.option_strings for action in parser._actions):
    parser.add_argument(
      "--verbosity", type=int, default=0, help="1: also other libraries' INFO log records"
    )
  args = parser.parse_args(argv)
  logging.use_absl_handler()
  logging.set_verbosity(logging.INFO)
  configure_console(args.verbosity)
  enable_compilation_cache()
  backend = start_backend()
  try:
    _refuse_output_over_an_input(args)
    main(args)
  except USER_ERRORS as error:
    print(f"error: {error}", file=sys.stderr)
    return 2
  except flax.errors.ScopeParamShapeError as error:  # arrays that do not fit their own metadata
    detail = str(error).split(" (https://")[0]
    where = getattr(args, "checkpoint", None) or "the model"
    print(f"error: {where}: its weights do not fit the model it describes: {detail}",
          file=sys.stderr)  # fmt: skip
    return 2
  except OSError as error:  # the system refused: a read-only folder, a name too long, a full disk
    output = getattr(args, "output", None)
    where = error.filename or output or "a file"
    if output and ".partial-" in os.path.basename(str(where)):  # the staging name of the output
      where = output
    print(f"error: {where}: {error.strerror or error}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # outputs are staged beside their path and removed on the way out
    print(f"interrupted: nothing was written to {getattr(args, 'output', 'the output')}",
          file=sys.stderr, flush=True)  # fmt: skip
    # Leave at once: XLA may still be compiling or computing in its own threads, and tearing the
    # interpreter down under them crashed (SIGSEGV) when the interrupt came during compilation.
    os._exit(130)
  finally:
    backend.join()  # never leave the interpreter while CUDA is still being set up
  return 0


def start_backend() -> threading.Thread:
  """Brings JAX's backend up in a background thread (started) and returns the thread.

  On a GPU that takes seconds, which a command otherwise waits for when it first puts its weights
  on the device: measured on an H200 (jax 0.11.2), 0.5 s for ``jax.devices()`` and then 2.2 s for
  the first array on the device (the memory pool, the stream). Started here, both overlap with
  reading the inputs and the weights (1.2 s for face-vid2vid's). JAX creates a backend once, under
  a lock, so the main thread's first use waits for this one; an error is left for the main thread
  to meet and report.
  """

  def bring_up() -> None:
    start = time.perf_counter()
    try:
      import jax

      device = jax.devices()[0]
      jax.device_put(np.zeros((), np.float32), device).block_until_ready()
    except Exception:  # reported where the command itself uses JAX
      return
    logging.info("JAX backend up (%s) in %.1f s", device.device_kind, time.perf_counter() - start)

  thread = threading.Thread(target=bring_up, name="jax-backend", daemon=True)
  thread.start()
  return thread


def _refuse_output_over_an_input(args: argparse.Namespace) -> None:
  """CommandError when ``--output`` names the same file or folder as an input argument."""
  output = getattr(args, "output", None)
  if not output:
    return
  target = os.path.realpath(output)
  for name, value in vars(args).items():
    if name != "output" and isinstance(value, str) and value and os.path.realpath(value) == target:
      flag = "--" + name.replace("_", "-")
      raise CommandError(f"{output}: is also the {flag} input; write the output elsewhere")


# --------------------------------------------------------------------------------------------
# Arguments


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("model")
  group.add_argument(
    "--checkpoint",
    required=True,
    help="a converted face-vid2vid directory, or a training run's workdir (MMFA, face_vid2vid, "
    "or an expression-VAE run)",
  )
  group.add_argument("--step", type=int, help="training step to load (default: the latest)")
  group.add_argument(
    "--hopenet", help="converted Hopenet directory (MMFA runs with the frozen one)"
  )
  group.add_argument("--variant", choices=("mmfa", "face_vid2vid"), help="refuse other variants")
  group.add_argument("--raw-weights", "--raw_weights", action="store_true",
                     help="a run trained with config.optim.ema_decay > 0: its last parameters, not "
                     "their moving average (the default)")  # fmt: skip
  group.add_argument("--batch-size", "--batch_size", type=int, default=8,
                     help="frames per compiled call")  # fmt: skip
  group.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="compute dtype of the networks (parameters stay float32)")  # fmt: skip


def add_crop_arguments(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("face crop")
  group.add_argument(
    "--crop",
    action="store_true",
    help="find the face (OpenCV's Haar cascade), animate a square crop around it and paste the "
    "result back into the full source frame; without it, the centre square is used",
  )
  group.add_argument("--margin", type=float, default=0.25,
                     help="crop margin per side, as a fraction of the face box")  # fmt: skip
  group.add_argument("--feather", type=float, default=0.1,
                     help="paste-back blend ramp, as a fraction of the crop side")  # fmt: skip
  group.add_argument("--detect-every", "--detect_every", type=int, default=5,
                     help="look for the driving face every N frames")  # fmt: skip


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--output",
    required=True,
    help=f"an image ({', '.join(IMAGE_SUFFIXES)}), a video ({', '.join(OUTPUT_FORMATS)}) or, "
    "without a suffix, a folder of PNG frames",
  )
  parser.add_argument("--fps", type=float,
                      help=f"frame rate of a video made from images (default {DEFAULT_FPS})")  # fmt: skip


def load_animator(args: argparse.Namespace, variant: str | None = None):
  from mmfa_jax.inference import Animator

  if args.batch_size < 1:
    raise CommandError(f"--batch-size must be at least 1, got {args.batch_size}")
  return Animator.from_checkpoint(
    args.checkpoint,
    step=args.step,
    hopenet=args.hopenet,
    variant=variant or args.variant,
    averaged=not args.raw_weights,
    batch_size=args.batch_size,
    dtype=args.dtype,
  )


# --------------------------------------------------------------------------------------------
# Inputs


def centre_square(width: int, height: int, path: str = "") -> FaceCrop:
  """The largest centred square of a ``width`` x ``height`` frame (logged when it cuts)."""
  side = min(width, height)
  if path and width != height:
    logging.info("%s: %dx%d, using the centre %dx%d square (--crop finds the face)",
                 path, width, height, side, side)  # fmt: skip
  return FaceCrop((width - side) // 2, (height - side) // 2, side)


def _face_crop(frames: Iterable[np.ndarray], path: str, margin: float, every: int) -> FaceCrop:
  crop = find_face_crop(frames, margin, every)
  if crop is None:
    raise CommandError(f"{path}: no face found (--crop); crop the face yourself or drop --crop")
  logging.info("%s: face crop %dpx at (%d, %d)", path, crop.side, crop.left, crop.top)
  return crop


def video_crop(info: MediaInfo, face: bool, margin: float, detect_every: int = 1) -> FaceCrop:
  """The window of a driving input the model sees: the face (one crop for the whole video: the
  union of the faces found every ``detect_every`` frames) or the centre square."""
  if not face:
    return centre_square(info.width, info.height, info.path)
  frames = tqdm(iter_frames(info.path), total=info.frames, desc="finding the face", unit="frame",
                leave=False, disable=info.frames == 1)  # fmt: skip
  return _face_crop(frames, info.path, margin, detect_every)


@dataclasses.dataclass
class Source:
  """The source frame, its window and the model-sized image cut from it."""

  full: np.ndarray  # (H, W, 3) float in [0, 1]
  crop: FaceCrop
  image: np.ndarray  # (size, size, 3)
  paste_back: bool  # True with --crop: outputs are the full frame with the result pasted in

  def compose(self, generated: np.ndarray, feather: float) -> np.ndarray:
    """An output frame: the generated crop, or the full source frame with it pasted in."""
    return self.crop.paste(self.full, generated, feather) if self.paste_back else generated

  @property
  def shown(self) -> np.ndarray:
    """What side-by-side shows of the source."""
    return self.full if self.paste_back else self.image


def load_source(path: str, size: int, face: bool, margin: float) -> Source:
  """An image (or a video's first frame), its window (face or centre square), model-sized."""
  info = probe(path)
  if info.kind != "image":
    logging.info("%s: a %s; its first frame is used", path, info.kind)
  full = next(iter_frames(path))
  if face:
    crop = _face_crop([full], path, margin, 1)
  else:
    crop = centre_square(full.shape[1], full.shape[0], path)
  return Source(full, crop, crop.crop(full, size), face)


# --------------------------------------------------------------------------------------------
# Outputs


def output_folder_problem(path: str) -> str | None:
  """Why ``path``'s folder cannot be made (a file where a folder of it should be), or None:
  missing folders are made when the output is written."""
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  return (
    None if os.path.isdir(parent) else f"{path}: {parent} is a file, so no folder can be made there"
  )


def output_kind(path: str, frames: int) -> str:
  """``'image'`` or ``'video'`` (files and folders) for an output path, checked before any work."""
  suffix = os.path.splitext(path)[1].lower()
  problem = output_folder_problem(path)
  if problem:
    raise CommandError(problem)
  if suffix and os.path.isdir(path):
    raise CommandError(f"{path}: a folder is there; a {suffix} file cannot replace it")
  if suffix in IMAGE_SUFFIXES:
    if frames != 1:
      raise CommandError(
        f"{path}: an image holds one frame, this output has {frames}; write a video "
        f"({', '.join(OUTPUT_FORMATS)}) or a folder (no suffix)"
      )
    return "image"
  if suffix and suffix not in OUTPUT_FORMATS:
    raise CommandError(
      f"{path}: cannot write {suffix!r}; use an image ({', '.join(IMAGE_SUFFIXES)}), a video "
      f"({', '.join(OUTPUT_FORMATS)}) or a folder (no suffix)"
    )
  if os.path.isfile(path) and not suffix:
    raise CommandError(f"{path}: a file is there; a frame folder cannot replace it")
  if os.path.isdir(path):
    others = [name for name in os.listdir(path) if not name.lower().endswith(IMAGE_SUFFIXES)]
    if others:  # an earlier frame folder is replaced whole: never a folder of other things
      raise CommandError(
        f"{path}: a folder holding more than frames ({others[0]!r}...) is there; name a new "
        "or empty folder, or an earlier output"
      )
  return "video"


def write_frames(
  path: str,
  frames: Iterable[np.ndarray],
  *,
  count: int,
  fps: Fraction | float | None = None,
  audio_from: str | None = None,
  desc: str = "frames",
) -> None:
  """Writes ``count`` frames to an image, a video or a folder (atomically), with a progress bar."""
  frames = tqdm(frames, total=count, desc=desc, unit="frame")
  if output_kind(path, count) == "image":
    write_image(path, next(iter(frames)))
  else:
    with VideoWriter(path, fps or DEFAULT_FPS, audio_from=audio_from) as writer:
      for frame in frames:
        writer.write(frame)
  logging.info("wrote %s (%d frame%s)", path, count, "" if count == 1 else "s")


def side_by_side(panels: Sequence[np.ndarray]) -> np.ndarray:
  """Panels side by side, each resized (aspect kept) to the height of the last one."""
  height = panels[-1].shape[0]
  resized = [
    p
    if p.shape[0] == height
    else resize(p, (height, max(1, round(p.shape[1] * height / p.shape[0]))))
    for p in panels
  ]
  return np.concatenate(resized, axis=1)


def unbatch(batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
  """Frames of an iterable of ``(b, H, W, 3)`` batches."""
  for batch in batches:
    yield from batch
