"""Animation throughput: driving frames per second per batch size, the source encoded once.

What a driving frame costs in ``Animator.iter_animate`` after the source is encoded: its motion
(keypoint detector / head pose / expression), the target keypoints, and the render (dense motion,
warping, generator), one compiled call per batch. Random weights of the config's real widths (the
values do not change the cost); random frames at the config's size (256 x 256 for vox).

  python benchmarks/animate.py [--config vox_face_vid2vid] [--batch-sizes 1 2 4 8 16 32]
      [--repeats 3] [--json OUT.jsonl]

Per batch size: the first call's seconds (compilation of motion + render, and one run), seconds
per batch after it (median of ``--repeats``), frames/s, and peak memory (device, or host RSS on CPU;
cumulative over the run, so it is the largest batch's so far).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _measure import append_json, load_config, peak_memory_gib, random_model


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--config", default="vox_face_vid2vid", help="module under configs/")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--json", help="append one JSON line per batch size to this file")
  args = parser.parse_args()

  import jax
  import numpy as np

  from mmfa_jax.compilation_cache import enable_compilation_cache
  from mmfa_jax.inference import Animator

  enable_compilation_cache()  # MMFA_JAX_CACHE_DIR=none measures cold first calls

  config = load_config(args.config)
  size = config.image_size
  variables, frozen = random_model(config)
  device = jax.devices()[0]
  rng = np.random.default_rng(0)
  source = rng.uniform(size=(size, size, 3)).astype(np.float32)

  print(f"{args.config}: {size}x{size}, {device.device_kind} ({device.platform})")
  print(f"{'batch':>5} {'first s':>10} {'s/batch':>8} {'frames/s':>9} {'peak GiB':>9}")
  for batch_size in args.batch_sizes:
    animator = Animator(
      config.model, variables, image_size=size, batch_size=batch_size, frozen=frozen
    )
    start = time.perf_counter()
    state = jax.block_until_ready(animator.encode_source(source))
    encode_seconds = time.perf_counter() - start  # compile + run, the first time
    frames = rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32)

    def one_batch(state=state, frames=frames, animator=animator):
      # One compiled call: motion, target keypoints, render; host frames out.
      return list(animator.iter_animate_encoded(state, frames))

    start = time.perf_counter()
    one_batch()
    first_seconds = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      one_batch()
      times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak, peak_kind = peak_memory_gib()
    result = dict(
      config=args.config,
      platform=device.platform,
      device=device.device_kind,
      image_size=size,
      batch_size=batch_size,
      source_encode_first_s=round(encode_seconds, 2),
      first_call_s=round(first_seconds, 2),
      batch_s=round(seconds, 4),
      frames_per_s=round(batch_size / seconds, 3),
      peak_gib=round(peak, 2),
      peak_kind=peak_kind,
      xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    print(
      f"{batch_size:>5} {first_seconds:>10.1f} {seconds:>8.3f} {batch_size / seconds:>9.2f} "
      f"{peak:>9.2f}  ({peak_kind})",
      flush=True,
    )
    append_json(args.json, result)


if __name__ == "__main__":
  main()
