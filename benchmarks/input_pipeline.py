"""Samples per second of the training input pipeline at 256 x 256, for each kind of source, in one run.

Sources: built-in synthetic heads (rendered on the fly), PNG frame folders, mp4 files and the
ArrayRecord build of the same videos (all written by this script into a temporary folder from the
synthetic heads). Each is timed in steady state over the same number of (source, driving) pairs,
with ``--threads`` grain read threads and ``--workers`` worker processes (0: the main process).

  python benchmarks/input_pipeline.py [--videos 6] [--frames 16] [--batches 6] [--batch-size 8] [--workers 0]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from absl import flags
from PIL import Image

from mmfa_jax.data.arrayrecord import ArrayRecordSource, build_dataset
from mmfa_jax.data.pipeline import SyntheticSource, VideoFolderSource, train_dataset
from mmfa_jax.data.synthetic import SyntheticHeads


def _write_data(root: str, heads: SyntheticHeads, size: int) -> None:
  import av

  for video in range(heads.num_videos):
    frames = (heads.video(video, size) * 255).astype(np.uint8)
    folder = os.path.join(root, "png", "train", f"id{video:03d}#clip.mp4")
    os.makedirs(folder)
    for index, frame in enumerate(frames):
      Image.fromarray(frame).save(os.path.join(folder, f"{index:07d}.png"))
    mp4_dir = os.path.join(root, "mp4", "train")
    os.makedirs(mp4_dir, exist_ok=True)
    with av.open(os.path.join(mp4_dir, f"id{video:03d}#clip.mp4"), "w") as container:
      stream = container.add_stream("libx264", rate=25)
      stream.width = stream.height = size
      stream.pix_fmt = "yuv420p"
      for frame in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
          container.mux(packet)
      for packet in stream.encode():
        container.mux(packet)


def _rate(source, args) -> float:
  """Steady-state pairs per second: read-ahead bounded to one batch (so a warm-up batch cannot
  pre-compute the timed ones), one warm-up batch, then ``--batches`` timed batches."""
  iterator = iter(
    train_dataset(
      source, image_size=args.size, batch_size=args.batch_size, seed=0, process_index=0, process_count=1,
      worker_count=args.workers, read_threads=args.threads, prefetch=1,
    )
  )  # fmt: skip
  next(iterator)
  start = time.perf_counter()
  for _ in range(args.batches):
    next(iterator)
  rate = args.batches * args.batch_size / (time.perf_counter() - start)
  del iterator
  return rate


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--videos", type=int, default=6)
  parser.add_argument("--frames", type=int, default=16)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--batch-size", type=int, default=8)
  parser.add_argument("--workers", type=int, default=0)
  parser.add_argument("--threads", type=int, default=2, help="grain read threads")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()  # grain workers read absl flags

  heads = SyntheticHeads(seed=0, num_videos=args.videos, num_frames=args.frames)
  with tempfile.TemporaryDirectory() as root:
    _write_data(root, heads, args.size)
    built = build_dataset(
      os.path.join(root, "png"), os.path.join(root, "built"), image_size=args.size
    )
    sources = {
      "synthetic (rendered)": SyntheticSource(heads),
      "png frame folders": VideoFolderSource(os.path.join(root, "png")),
      "mp4 files": VideoFolderSource(os.path.join(root, "mp4")),
      "arrayrecord (jpeg)": ArrayRecordSource(built["data_dir"]),
    }
    print(
      f"{args.size}x{args.size} pairs, batch {args.batch_size}, {args.threads} read threads, "
      f"{args.workers} workers, {os.cpu_count()} CPUs"
    )
    for name, source in sources.items():
      print(f"  {name:<22} {_rate(source, args):8.1f} samples/s")


if __name__ == "__main__":
  main()
