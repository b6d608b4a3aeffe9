"""Start-up: seconds from process start to the first finished training step and to the first
animated frame, with an empty compilation cache (cold) and with the cache the cold run filled
(warm). Every case is its own process running the real command:

- train: ``python -m mmfa_jax.main --config=configs/CONFIG.py --config.train.num_steps=1`` on the
  built-in synthetic heads at the config's size (frozen networks the config needs are random
  converted directories made here). ``command s`` is the whole command (import, initialisation,
  compilation, the step, the final checkpoint); ``first step s`` is process start to the end of
  step 1, as the run itself measured it (``startup_seconds`` in its metrics); ``compiled`` and
  ``cached`` count the programs XLA compiled and those the cache provided until then.
- animate: ``python -m mmfa_jax.animate`` of that training run, one driving image to one output
  image: the command's time is the time to the first animated frame. Its own cache directory, so
  its cold case compiles what animation needs.

  python benchmarks/startup.py [--configs synthetic vox vox_face_vid2vid] [--batch-size N]
      [--workdir DIR] [--json OUT.jsonl] [--no-animate | --no-train] [--set FIELD=VALUE ...]

``--no-train`` measures only the animate cases, of an untrained model written as a converted
face-vid2vid directory (face_vid2vid configs), without paying for a training step's compilation.

Cold cases use a fresh cache directory per config (``MMFA_JAX_CACHE_DIR``), warm cases the same
directory again with a new workdir. ``--batch-size`` defaults to each config's own for synthetic
and to 16 (accelerator) or 1 (CPU) for the vox configs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _measure import append_json, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# The commands measured get this environment; this process itself takes no GPU memory ahead (with
# JAX's default preallocation it would hold 75% of the GPU the commands run on).
CHILD_ENV = dict(os.environ)
os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"


def _frozen_directories(config, directory: str) -> dict[str, str]:
  """Random converted directories for the frozen networks ``config`` needs: ``{kind: dir}``."""
  import numpy as np

  from mmfa_jax.checkpoints import save_converted
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.objective import Networks, required_pretrained

  networks = Networks.from_config(config)
  size = config.image_size
  made = {}
  for kind in required_pretrained(config):
    module = getattr(networks, kind)
    module = module.detector if kind == "landmarks" else module  # objective.LandmarkNetwork
    image = np.zeros((1, 224 if kind == "hopenet" else size, 224 if kind == "hopenet" else size, 3))
    path = os.path.join(directory, kind)
    if not os.path.isdir(path):
      variables = init_variables(module, 0, image.astype(np.float32))
      save_converted(path, variables, {"kind": kind, "source": "random (benchmarks/startup.py)"})
    made[kind] = path
  return made


def _images(directory: str, size: int) -> tuple[str, str]:
  """A source and a driving frame (PNG) from the built-in synthetic heads."""
  from mmfa_jax.data.synthetic import SyntheticHeads
  from mmfa_jax.visualize import save_png

  heads = SyntheticHeads(num_videos=2, num_frames=8, seed=0)
  source = os.path.join(directory, "source.png")
  driving = os.path.join(directory, "driving.png")
  save_png(source, heads.frame(0, 0, size))
  save_png(driving, heads.frame(1, 5, size))
  return source, driving


def _untrained_model(config, directory: str) -> str:
  """An untrained face-vid2vid model of ``config`` as a converted directory (what
  ``tools/convert_torch_weights.py face_vid2vid`` writes), for the animate cases of ``--no-train``."""
  import numpy as np

  from mmfa_jax.checkpoints import MODEL_KIND, save_converted
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.models import animation_model_from_config, variant_from_config
  from mmfa_jax.models.motion import zero_head_pose

  if variant_from_config(config.model).name != MODEL_KIND:
    raise SystemExit(f"--no-train: {config.model.variant} is not a face_vid2vid config")
  if not os.path.isdir(directory):
    image = np.zeros((1, config.image_size, config.image_size, 3), np.float32)
    model = animation_model_from_config(config.model)
    poses = (zero_head_pose(1), zero_head_pose(1))
    variables = init_variables(model, 0, image, image, False, poses)
    metadata = dict(
      kind=MODEL_KIND,
      source="random (benchmarks/startup.py)",
      generator=config.model.generator.kind,
      model_config=config.model.to_json(),
      image_size=int(config.image_size),
    )
    save_converted(directory, {"model": variables}, metadata)
  return directory


def _run(command: list[str], cache: str, timeout: float, log: str) -> float:
  """Runs ``command`` with ``cache`` as the compilation cache; its output goes to ``log``."""
  path = os.pathsep.join(p for p in (ROOT, CHILD_ENV.get("PYTHONPATH")) if p)
  env = dict(CHILD_ENV, PYTHONPATH=path, MMFA_JAX_CACHE_DIR=cache, PYTHONUNBUFFERED="1")
  start = time.perf_counter()
  result = subprocess.run(
    command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout
  )
  seconds = time.perf_counter() - start
  with open(log, "w") as handle:
    handle.write(result.stdout + result.stderr)
  if result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--configs", nargs="+", default=["synthetic", "vox", "vox_face_vid2vid"])
  parser.add_argument("--batch-size", type=int, help="global batch of every training case")
  which = parser.add_mutually_exclusive_group()
  which.add_argument("--no-animate", action="store_true", help="training cases only")
  which.add_argument("--no-train", action="store_true",
                     help="animate cases only, of an untrained face_vid2vid model")  # fmt: skip
  parser.add_argument("--workdir", help="keep runs, caches and inputs here (default: a temp dir)")
  parser.add_argument("--timeout", type=float, default=3600, help="seconds per case")
  parser.add_argument("--json", help="append one JSON line per case to this file")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="a config override of the training cases, e.g. "
                      "train.tiered_compilation=off (repeatable)")  # fmt: skip
  args = parser.parse_args()

  import jax

  device = jax.devices()[0]
  base = args.workdir or tempfile.mkdtemp(prefix="mmfa-startup-")
  os.makedirs(base, exist_ok=True)
  print(f"start-up on {device.device_kind} ({device.platform}), jax {jax.__version__}; in {base}")
  header = f"{'case':<34} {'command s':>9} {'first step s':>12} {'compiled':>8} {'cached':>6}"
  print(header)
  facts = dict(platform=device.platform, device=device.device_kind, jax=jax.__version__)
  rows = []
  for name in args.configs:
    config = load_config(name)
    if args.no_train:
      checkpoint = _untrained_model(config, os.path.join(base, "untrained", name))
    else:
      checkpoint = _train_cases(args, name, config, base, facts, rows)
    if not args.no_animate:
      _animate_cases(args, name, config.image_size, base, checkpoint, facts, rows)
  print(json.dumps(rows))


def _train_cases(args, name: str, config, base: str, facts: dict, rows: list) -> str:
  """The cold and warm training cases of one config; returns the last run's workdir."""
  from mmfa_jax.metric_logs import read_metrics

  batch = args.batch_size or (config.data.batch_size if name == "synthetic" else None)
  batch = batch or (16 if facts["platform"] != "cpu" else 1)
  frozen = _frozen_directories(config, os.path.join(base, "frozen", name))
  cache = os.path.join(base, "cache", name)
  shutil.rmtree(cache, ignore_errors=True)
  overrides = [
    "--config.train.num_steps=1",
    f"--config.data.batch_size={batch}",
    "--config.data.source=synthetic",
    "--config.data.worker_count=0",
    "--config.train.progress_bar=False",
    *[f"--config.pretrained.{kind}={path}" for kind, path in frozen.items()],
    *[f"--config.{setting}" for setting in args.set],
  ]
  workdir = ""
  for temperature in ("cold", "warm"):
    workdir = os.path.join(base, "runs", f"{name}_{temperature}")
    shutil.rmtree(workdir, ignore_errors=True)
    command = [
      sys.executable,
      "-m",
      "mmfa_jax.main",
      "--config=configs/{}.py{}{}".format(*name.partition(":")),  # module.py[:argument]
      f"--workdir={workdir}",
      *overrides,
    ]
    seconds = _run(command, cache, args.timeout, f"{workdir}.log")
    first = read_metrics(workdir)[0]
    row = dict(
      case=f"train {name} b{batch} {temperature}",
      command_s=round(seconds, 1),
      first_step_s=round(first.get("startup_seconds", float("nan")), 1),
      compiled=int(first.get("compiled_programs", -1)),
      compile_s=round(first.get("compile_seconds", float("nan")), 1),
      cached=int(first.get("cached_programs", -1)),
    )
    rows.append(row)
    print(
      f"{row['case']:<34} {row['command_s']:>9.1f} {row['first_step_s']:>12.1f} "
      f"{row['compiled']:>8d} {row['cached']:>6d}",
      flush=True,
    )
    append_json(
      args.json,
      dict(row, config=name, batch_size=batch, temperature=temperature, **facts),
    )  # fmt: skip
  return workdir


def _animate_cases(
  args, name: str, size: int, base: str, checkpoint: str, facts: dict, rows: list
) -> None:
  """The cold and warm first-animated-frame cases of ``checkpoint`` (its own cache)."""
  source, driving = _images(base, size)
  animate_cache = os.path.join(base, "cache", f"{name}_animate")
  shutil.rmtree(animate_cache, ignore_errors=True)
  for temperature in ("cold", "warm"):
    output = os.path.join(base, "runs", f"{name}_animated_{temperature}.png")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    command = [
      sys.executable,
      "-m",
      "mmfa_jax.animate",
      "--checkpoint",
      checkpoint,
      "--source",
      source,
      "--driving",
      driving,
      "--output",
      output,
      "--batch-size",
      "1",
    ]
    seconds = _run(command, animate_cache, args.timeout, f"{output}.log")
    row = dict(case=f"animate {name} first frame {temperature}", command_s=round(seconds, 1))
    rows.append(row)
    print(f"{row['case']:<34} {row['command_s']:>9.1f}", flush=True)
    append_json(args.json, dict(row, config=name, temperature=temperature, **facts))


if __name__ == "__main__":
  main()
