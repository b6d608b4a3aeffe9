"""Where the time goes: per-operation tables of one training step or one animation batch.

Runs the program once to compile and warm up, then once under ``jax.profiler.trace``, and joins the
trace's thunk events with the optimized HLO (``mmfa_jax.profiling``): seconds per kind of operation
(``fusion:convolution``, ``convolution``, ``fusion:scatter``...), per network scope (the Flax module
path, forward and ``(bwd)``), and the most expensive instructions.

  python benchmarks/op_profile.py --path train --config vox_face_vid2vid [--batch-size 1]
      [--dtype float32] [--depth 3] [--top 25] [--json OUT.jsonl] [--trace-dir DIR]
  python benchmarks/op_profile.py --path animate --config vox_face_vid2vid [--batch-size 1]

Weights are random (the values do not change the cost); nothing is read from or written to the
compilation cache unless ``--cache`` is given (the training path then loads a step that
``train_step.py`` compiled with the same shapes: minutes less on a GPU, where autotuning the
convolutions dominates a cold compilation). ``--trace-dir`` keeps the trace for TensorBoard /
Perfetto.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

from _measure import append_json, load_config, random_model

ANIMATE_MODULE = "animate_batch"


def _train(args) -> tuple[str, object]:
  """(optimized HLO text, a function running one step) of the training step."""
  import jax
  from train_step import build_step

  built = build_step(args.config, args.batch_size, args.dtype)
  compiled, state = built["compiled"], list(built["args"])

  def run() -> None:
    generator, discriminator, metrics, _ = compiled(*state)
    state[0], state[1] = generator, discriminator
    jax.block_until_ready((generator, discriminator, metrics))

  return compiled.as_text(), run


def _animate(args, dump_dir: str) -> tuple[str, object]:
  """(optimized HLO text, a function animating one batch) of ``Animator.iter_animate_encoded``."""
  import jax
  import numpy as np

  from mmfa_jax.inference import Animator

  config = load_config(args.config)
  size = config.image_size
  variables, frozen = random_model(config)
  animator = Animator(
    config.model,
    variables,
    image_size=size,
    batch_size=args.batch_size,
    dtype=args.dtype,
    frozen=frozen,
  )
  rng = np.random.default_rng(0)
  state = jax.block_until_ready(animator.encode_source(rng.uniform(size=(size, size, 3))))
  frames = rng.uniform(size=(args.batch_size, size, size, 3)).astype(np.float32)

  def run() -> None:
    list(animator.iter_animate_encoded(state, frames))

  run()  # compiles, so that the dump exists
  dumps = glob.glob(os.path.join(dump_dir, f"*{ANIMATE_MODULE}*after_optimizations.txt"))
  if not dumps:
    raise RuntimeError(f"no optimized HLO of {ANIMATE_MODULE} in {dump_dir}")
  with open(max(dumps, key=os.path.getsize)) as handle:
    return handle.read(), run


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--path", choices=("train", "animate"), default="train")
  parser.add_argument("--config", default="vox_face_vid2vid", help="module under configs/")
  parser.add_argument("--batch-size", type=int, default=1)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--depth", type=int, default=3, help="module-path components per scope")
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--json", help="append the tables as one JSON line to this file")
  parser.add_argument("--trace-dir", help="keep the profiler trace here")
  parser.add_argument("--cache", action="store_true",
                      help="use the compilation cache (mmfa_jax.compilation_cache; training path)")  # fmt: skip
  args = parser.parse_args()

  dump_dir = tempfile.mkdtemp(prefix="mmfa-profile-hlo-")
  if args.path == "animate":  # the optimized HLO of the animate call, from XLA's dump
    flags = f"--xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
    flags += f" --xla_dump_hlo_module_re=.*{ANIMATE_MODULE}.*"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()

  import jax

  from mmfa_jax import profiling
  from mmfa_jax.compilation_cache import enable_compilation_cache

  if args.cache and args.path == "train":  # the animate path needs XLA's dump: it compiles
    enable_compilation_cache()
  hlo_text, run = _train(args) if args.path == "train" else _animate(args, dump_dir)
  run()  # warm-up
  start = time.perf_counter()
  run()
  untraced = time.perf_counter() - start

  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="mmfa-profile-trace-")
  with jax.profiler.trace(trace_dir):
    start = time.perf_counter()
    run()
    traced = time.perf_counter() - start
  traces = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
  instructions = profiling.parse_hlo_module(hlo_text)
  seconds = profiling.thunk_seconds(traces[-1], instructions)

  device = jax.devices()[0]
  print(
    f"{args.path} {args.config} batch {args.batch_size} {args.dtype} on {device.device_kind}: "
    f"{untraced:.3f} s untraced, {traced:.3f} s traced, {sum(seconds.values()):.3f} s in "
    f"{len(seconds)} thunks ({len(instructions)} HLO instructions)"
  )
  tables = {}
  for by in ("category", "scope", "instruction"):
    rows = profiling.time_table(instructions, seconds, by, depth=args.depth)
    tables[by] = [dict(key=r.key, seconds=round(r.seconds, 4), count=r.count) for r in rows]
    print()
    print(profiling.format_table(f"by {by}", rows, args.top))
  append_json(
    args.json,
    dict(
      path=args.path,
      config=args.config,
      batch_size=args.batch_size,
      dtype=args.dtype,
      platform=device.platform,
      device=device.device_kind,
      xla_flags=os.environ.get("XLA_FLAGS", ""),
      untraced_s=round(untraced, 4),
      traced_s=round(traced, 4),
      thunk_s=round(sum(seconds.values()), 4),
      tables=tables,
    ),
  )
  sys.stdout.flush()


if __name__ == "__main__":
  main()
