"""Training-step cost: compile time, step time, images/s and peak memory, per batch size and dtype.

The whole MMFA step (generator update with every loss term of the config, then the discriminator
update) at the widths of ``--config`` (default vox-256), on random images, with the frozen networks
the config needs (Hopenet, VGG19, VGG-Face) randomly initialised (their values do not change the
cost). Each (dtype, batch size) runs in a fresh process, so the peak device memory of one does not
hide the next; on CPU the peak is the process's resident set instead.

  python benchmarks/train_step.py [--config vox] [--batch-sizes 4 8] [--dtypes float32 bfloat16]
      [--steps 5] [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _measure import append_json, load_config, peak_memory_gib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _frozen_variables(nets, config) -> dict:
  """Random variables for every frozen network the config needs (``nets``: ``objective.Networks``),
  made without compiling (``initialization.init_variables``)."""
  import numpy as np

  from mmfa_jax.initialization import init_variables

  frozen = {}
  size = config.image_size
  if nets.hopenet is not None:
    frozen["hopenet"] = init_variables(nets.hopenet, 0, np.zeros((1, 224, 224, 3), np.float32))
  for kind in ("vgg19", "vggface"):
    if getattr(nets, kind) is not None:
      frozen[kind] = init_variables(
        getattr(nets, kind), 0, np.zeros((1, size, size, 3), np.float32)
      )
  if nets.landmarks is not None:  # the built-in landmark detector (config.model.landmarks)
    image = np.zeros((1, size, size, 3), np.float32)
    frozen["landmarks"] = init_variables(nets.landmarks.detector, 0, image)
  return frozen


def build_step(config_name: str, batch_size: int, dtype: str) -> dict:
  """The compiled training step of ``config_name`` and its arguments, in this process:
  ``{"trainer", "compiled", "args", "compile_seconds", "compiles"}`` (``args``: generator,
  discriminator, frozen variables, batch, key)."""
  import jax
  import numpy as np

  from mmfa_jax.compilation_cache import CompileCounter
  from mmfa_jax.objective import Networks
  from mmfa_jax.sharding import make_mesh, replicated
  from mmfa_jax.train import Trainer

  config = load_config(config_name)
  config.data.batch_size = batch_size
  config.train.dtype = dtype
  mesh = make_mesh(0)

  frozen = _frozen_variables(Networks.from_config(config), config)
  trainer = Trainer(config, mesh=mesh, frozen=frozen)
  generator, discriminator = trainer.init_states()
  rng = np.random.default_rng(0)
  size = config.image_size
  local = {
    "source": rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32),
    "driving": rng.uniform(size=(batch_size, size, size, 3)).astype(np.float32),
  }
  batch = trainer.global_batch(local)
  key = jax.device_put(jax.random.key(1), replicated(mesh))
  args = (generator, discriminator, trainer.frozen, batch, key)

  start = time.perf_counter()
  with CompileCounter() as compiles:
    compiled = trainer.compiled_step.lower(*args).compile()  # optimized, never the quick tier
  compile_seconds = time.perf_counter() - start
  return dict(
    trainer=trainer,
    compiled=compiled,
    args=args,
    compile_seconds=compile_seconds,
    compiles=compiles,
  )


def _memory_analysis(compiled) -> dict:
  """XLA's own account of the compiled step's device memory (GiB): arguments, outputs and the
  temporary buffers (``{}`` where the backend gives none)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes")
  return {
    f"xla_{name.removesuffix('_size_in_bytes')}_gib": round(getattr(analysis, name) / 2**30, 2)
    for name in fields
    if hasattr(analysis, name)
  }


def run_one(config_name: str, batch_size: int, dtype: str, steps: int) -> dict:
  """Measures one (dtype, batch size) in this process; ``steps=0`` compiles only."""
  import jax

  from mmfa_jax.compilation_cache import enable_compilation_cache

  enable_compilation_cache()  # MMFA_JAX_CACHE_DIR=none measures cold compilations
  built = build_step(config_name, batch_size, dtype)
  compiled, compile_seconds, compiles = (
    built["compiled"],
    built["compile_seconds"],
    built["compiles"],
  )
  generator, discriminator, frozen, batch, key = built["args"]
  mesh = built["trainer"].mesh
  device = jax.devices()[0]
  result = dict(
    config=config_name,
    platform=device.platform,
    device=device.device_kind,
    devices=mesh.size,
    dtype=dtype,
    batch_size=batch_size,
    compile_s=round(compile_seconds, 2),
    step_from_cache=compiles.loaded > 0,
    xla_flags=os.environ.get("XLA_FLAGS", ""),
    **_memory_analysis(compiled),
  )
  if steps == 0:
    return result

  times = []
  for _ in range(steps + 1):  # the first call is a warm-up
    start = time.perf_counter()
    generator, discriminator, metrics, _ = compiled(generator, discriminator, frozen, batch, key)
    jax.block_until_ready((generator, discriminator, metrics))
    times.append(time.perf_counter() - start)
  step_seconds = statistics.median(times[1:])
  peak, peak_kind = peak_memory_gib()
  return dict(
    **result,
    step_s=round(step_seconds, 4),
    images_per_s=round(batch_size / step_seconds, 2),
    peak_gib=round(peak, 2),
    peak_gib_per_sample=round(peak / batch_size, 3),
    peak_kind=peak_kind,
    loss=float(metrics["generator_loss"]),
  )


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--config", default="vox", help="module under configs/ (vox, synthetic...)")
  parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8])
  parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--steps", type=int, default=5, help="timed steps (0: compile only)")
  parser.add_argument("--json", help="append one JSON line per measurement to this file")
  parser.add_argument("--one", nargs=2, metavar=("DTYPE", "BATCH"), help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.one:  # child process: one measurement, printed as JSON
    result = run_one(args.config, int(args.one[1]), args.one[0], args.steps)
    print("RESULT " + json.dumps(result), flush=True)
    return

  header = (
    f"{'dtype':<9} {'batch':>5} {'compile s':>10} {'step s':>8} {'images/s':>9} {'peak GiB':>9}"
    f" {'GiB/sample':>10}"
  )
  print(header)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  for dtype in args.dtypes:
    for batch_size in args.batch_sizes:
      command = [sys.executable, os.path.abspath(__file__), "--config", args.config]
      command += ["--steps", str(args.steps), "--one", dtype, str(batch_size)]
      done = subprocess.run(command, capture_output=True, text=True, env=env)
      lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
      if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        print(f"{dtype:<9} {batch_size:>5} failed: {' | '.join(tail)}", flush=True)
        continue
      result = json.loads(lines[-1][len("RESULT ") :])
      where = f"{result['device']} x{result['devices']}"
      if "step_s" not in result:  # --steps 0
        print(f"{dtype:<9} {batch_size:>5} {result['compile_s']:>10.1f}  compiled only ({where}, "
              f"XLA temp {result.get('xla_temp_gib')} GiB)", flush=True)  # fmt: skip
      else:
        print(
          f"{dtype:<9} {batch_size:>5} {result['compile_s']:>10.1f} {result['step_s']:>8.3f} "
          f"{result['images_per_s']:>9.2f} {result['peak_gib']:>9.2f} "
          f"{result['peak_gib_per_sample']:>10.3f}  ({result['peak_kind']}, "
          f"{'step loaded from the compilation cache, ' if result['step_from_cache'] else ''}"
          f"{where})",
          flush=True,
        )
      append_json(args.json, result)


if __name__ == "__main__":
  main()
