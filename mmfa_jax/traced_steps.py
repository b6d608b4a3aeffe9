"""Training steps whose traced program is kept beside the compilation cache: a resumed run, or a
second run of the same config, neither traces nor compiles its step again.

JAX's persistent compilation cache (``compilation_cache``) spares a second process the XLA
compilation, but not tracing and lowering the step in Python, which for the README job's step
costs 8 s on a 2-core CPU (6.6 s tracing, 1.7 s lowering; 5.8 s more load its cached executable).
``CachedStep`` exports the traced step once (``jax.export``: StableHLO, no pickle) into
``cache_directory()/traced/KEY.bin`` and runs every step, the first process's included, through
the exported program, so every process compiles the same module and the compilation cache hits.

``KEY`` covers everything the program depends on: the jax and jaxlib versions, every Python source
of the ``mmfa_jax`` package, the identity the caller gives (``config_identity``), the convolution
implementation traced (``MMFA_JAX_CONV`` or ``conv_implementation``), the mesh and the platform,
and each argument's path, shape, dtype and sharding. Anything that cannot be exported
falls back to the plain ``jax.jit`` (logged once). ``MMFA_JAX_CACHE_DIR=none`` turns it off, and
so does a run of several processes (each would decide alone whether it could export).

Tiered compilation (``quick_first``, on by default on the CPU): XLA:CPU spends most of a cold
start in LLVM. The first step runs a program compiled with LLVM's optimizations off
(``QUICK_COMPILER_OPTIONS``: the README job's step compiles in 36 s instead of 59 s on a 2-core CPU
and runs 1.5x slower), and ``optimize_in_background`` compiles the optimized program in a thread
while the quick one trains; the steps switch to it once it is ready. Both compile the same lowered
module, and both are kept in the compilation cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
from absl import logging

from mmfa_jax.atomic import write_atomically
from mmfa_jax.compilation_cache import cache_directory
from mmfa_jax.ops.convolution import resolved_conv_implementation

FORMAT = "1"  # of the files and the key
TRACED_DIR = "traced"
# The quick tier's XLA options: no LLVM optimization of the fused kernels (library convolutions
# and matrix products are not compiled, so they run at full speed either way).
QUICK_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


@functools.cache
def source_digest() -> str:
  """SHA-256 of the ``mmfa_jax`` package's Python sources (any edit makes a new key)."""
  root = os.path.dirname(os.path.abspath(__file__))
  digest = hashlib.sha256()
  for directory, subdirectories, files in os.walk(root):
    subdirectories.sort()
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(directory, name)
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as handle:
          digest.update(handle.read())
  return digest.hexdigest()


def _describe(tree: Any, sharding: Any) -> list[str]:
  """Path, shape, dtype and sharding of every leaf of ``tree`` (its static parts are in the
  caller's identity)."""
  return [
    f"{jax.tree_util.keystr(path)}:{leaf.shape}:{leaf.dtype}:{sharding}"
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  ]


def skeleton(tree: Any) -> Any:
  """A JSON description of a tree of nested dicts (string or integer keys), lists, tuples and
  ``None`` with array leaves ("*"); ValueError for anything else."""
  if isinstance(tree, dict):
    keys = sorted(tree)  # the order jax flattens dicts in
    for key in keys:
      if not isinstance(key, (str, int)) or isinstance(key, bool):
        raise ValueError(f"a dict key {key!r} of type {type(key).__name__}")
    return {"dict": [[key, skeleton(tree[key])] for key in keys]}
  if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
    return {type(tree).__name__: [skeleton(child) for child in tree]}
  if tree is None:
    return {"none": []}
  if hasattr(tree, "shape") and hasattr(tree, "dtype"):
    return "*"
  raise ValueError(f"a {type(tree).__name__} in the step's outputs")


def from_skeleton(description: Any, leaves: Any) -> Any:
  """The tree ``skeleton`` described, its leaves taken in order from the iterator ``leaves``."""
  if description == "*":
    return next(leaves)
  ((kind, children),) = description.items()
  if kind == "dict":
    return {key: from_skeleton(child, leaves) for key, child in children}
  if kind == "none":
    return None
  built = [from_skeleton(child, leaves) for child in children]
  return built if kind == "list" else tuple(built)


# Config fields that steer only the loop around the step, never what it computes (the batch's
# shapes are part of the traced step's key anyway): a run resumed with other values of these reuses
# the traced step.
LOOP_FIELDS = ("data", "evals", "pretrained", "pose_pretraining")
LOOP_TRAIN_FIELDS = (
  "stop_after_steps",
  "log_every",
  "sample_every",
  "checkpoint_every",
  "keep_checkpoints",
  "progress_bar",
  "tiered_compilation",
)


def config_identity(config: ml_collections.ConfigDict) -> str:
  """The config as JSON without ``LOOP_FIELDS``: what a traced training step depends on."""
  fields = config.to_dict()
  for name in LOOP_FIELDS:
    fields.pop(name, None)
  for name in LOOP_TRAIN_FIELDS:
    fields.get("train", {}).pop(name, None)
  return json.dumps(fields, sort_keys=True, default=str)


class CachedStep:
  """``jax.jit(step_fn, in_shardings, out_shardings, donate_argnums=(0, 1))`` of a training step
  ``(generator, discriminator, step_inputs, batch, key) -> (generator, discriminator, metrics,
  outputs)``, its traced program kept in the cache directory (module docstring).

  The arguments may be any pytrees (their structures are taken from them); the metrics and
  outputs must be trees ``skeleton`` describes; ``key`` is a typed PRNG key. ``identity`` names
  everything else the program depends on (``config_identity``). ``loaded_from_cache`` says
  whether the traced program came from the cache.
  """

  def __init__(
    self,
    step_fn: Callable[..., Any],
    *,
    in_shardings: tuple[Any, ...],
    out_shardings: tuple[Any, ...],
    identity: str,
    quick_first: bool = False,
  ):
    self._step_fn = step_fn
    self._in_shardings = in_shardings
    self._out_shardings = out_shardings
    self._identity = identity
    self._jitted: Any = None  # the function every step runs, built on the first call
    self._trees: list[Any] = []  # treedefs of the generator, discriminator, inputs and batch
    self._skeletons: list[Any] = []  # of the metrics and the outputs (``skeleton``)
    self.loaded_from_cache = False
    self.quick_first = quick_first
    # Tiered compilation: the lowered step, the program the steps run and the optimizing thread.
    self._lowered: Any = None
    self._program: Any = None
    self._optimizing: threading.Thread | None = None
    self._optimized: list[Any] = []  # the optimized program, or the error that stopped it
    self.tier = "jit"  # "quick" or "optimized" once tiered; "jit": jax.jit's own compilation
    self.quick_compile_seconds = 0.0
    self.optimize_seconds = 0.0
    # Set once the first call has traced and lowered the step (or failed to): what runs beside
    # the step's compilation waits for it (``evaluators.compile_ahead``).
    self.lowered = threading.Event()

  def _plain(self) -> Any:
    return jax.jit(
      self._step_fn,
      in_shardings=self._in_shardings,
      out_shardings=self._out_shardings,
      donate_argnums=(0, 1),
    )

  def _key(self, args: tuple[Any, ...]) -> str:
    parts = [FORMAT, jax.__version__, jax.lib.__version__, source_digest(), self._identity]
    parts.append(f"{jax.default_backend()}:{jax.devices()[0].device_kind}")
    parts.append(f"conv:{resolved_conv_implementation()}")  # chosen at trace time
    for arg, sharding in zip(args, self._in_shardings, strict=True):
      parts.extend(_describe(arg, sharding))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:40]

  def _flat_step(self, *leaves_and_key: Any) -> tuple[list[Any], ...]:
    """The step on the arguments' leaves (four lists) and raw key data, returning four lists of
    leaves: what is exported (plain containers only). Records the outputs' skeletons."""
    *leaves, key_data = leaves_and_key
    args = [jax.tree.unflatten(tree, part) for tree, part in zip(self._trees, leaves, strict=True)]
    out = self._step_fn(*args, jax.random.wrap_key_data(key_data))
    self._skeletons = [skeleton(part) for part in out[2:]]  # metrics, outputs
    return tuple(jax.tree.leaves(part) for part in out)

  def _build(self, args: tuple[Any, ...]) -> Any:
    directory = cache_directory()
    # One process per host: every process must run the same program, so none may fall back alone.
    if directory is None or jax.process_count() > 1:
      return self._plain()
    self._trees = [jax.tree.structure(arg) for arg in args[:4]]
    path = os.path.join(directory, TRACED_DIR, self._key(args) + ".bin")
    try:
      exported = self._load(path)
      if exported is None:
        exported = self._export(path, args)
    except Exception as error:  # anything jax.export refuses: run the step as it is
      logging.warning("the training step runs without its traced-program cache: %s", error)
      return self._plain()

    def run(*args: Any) -> tuple[Any, ...]:
      *parts, key = args
      generator, discriminator, metrics, outputs = exported.call(
        *[jax.tree.leaves(part) for part in parts], jax.random.key_data(key)
      )
      return (
        jax.tree.unflatten(self._trees[0], generator),
        jax.tree.unflatten(self._trees[1], discriminator),
        *[from_skeleton(d, iter(part)) for d, part in zip(self._skeletons, (metrics, outputs))],
      )

    return jax.jit(
      run,
      in_shardings=self._in_shardings,
      out_shardings=self._out_shardings,
      donate_argnums=(0, 1),
    )

  def _load(self, path: str) -> Any:
    skeletons = path.removesuffix(".bin") + ".json"
    if not (os.path.isfile(path) and os.path.isfile(skeletons)):
      return None
    start = time.perf_counter()
    try:
      with open(path, "rb") as handle:
        exported = jax.export.deserialize(bytearray(handle.read()))
      with open(skeletons) as handle:
        self._skeletons = json.load(handle)
    except Exception as error:  # a damaged file: trace again and replace it
      logging.warning("%s: unreadable traced program, tracing again (%s)", path, error)
      return None
    self.loaded_from_cache = True
    logging.info("traced training step read from %s in %.1f s", path, time.perf_counter() - start)
    return exported

  def _export(self, path: str, args: tuple[Any, ...]) -> Any:
    *parts, key = args
    start = time.perf_counter()
    flat = jax.jit(
      self._flat_step,
      in_shardings=self._in_shardings,
      out_shardings=self._out_shardings,
    )
    exported = jax.export.export(flat)(
      *[jax.tree.leaves(part) for part in parts], jax.random.key_data(key)
    )
    data = exported.serialize()
    try:  # the skeletons first: a program file is only read with its skeletons beside it
      write_atomically(path.removesuffix(".bin") + ".json", json.dumps(self._skeletons))
      write_atomically(path, bytes(data))
    except OSError as error:  # this run still uses what it traced; only the next one pays again
      logging.warning("%s: cannot keep the traced training step (%s)", path, error)
      return exported
    logging.info("training step traced and kept in %s (%.1f MB) in %.1f s", path,
                 len(data) / 1e6, time.perf_counter() - start)  # fmt: skip
    return exported

  def __call__(self, *args: Any) -> Any:
    try:
      return self._call(*args)
    finally:
      self.lowered.set()  # also when the first call failed: nothing waits forever

  def _call(self, *args: Any) -> Any:
    if self._jitted is None:
      self._jitted = self._build(args)
    if self._optimizing is not None and not self._optimizing.is_alive():
      self._adopt_optimized()
    if self._program is not None:
      return self._program(*args)
    if not self.quick_first:
      self.lowered.set()  # jax.jit traces, lowers and compiles in one call
      return self._jitted(*args)
    start = time.perf_counter()
    self._lowered = self._jitted.lower(*args)
    self.lowered.set()
    self._program = self._lowered.compile(compiler_options=QUICK_COMPILER_OPTIONS)
    self.quick_compile_seconds = time.perf_counter() - start
    self.tier = "quick"
    return self._program(*args)

  def optimize_in_background(self) -> bool:
    """Starts compiling the optimized program in a thread (quick tier only, once); the steps run
    it from the first call after it is compiled. Returns whether a compilation was started."""
    if self.tier != "quick" or self._optimizing is not None:
      return False

    def optimize() -> None:
      start = time.perf_counter()
      try:
        self._optimized.append(self._lowered.compile())
      except Exception as error:  # the quick program keeps training
        self._optimized.append(error)
      self.optimize_seconds = time.perf_counter() - start

    self._optimizing = threading.Thread(target=optimize, name="optimize-step", daemon=True)
    self._optimizing.start()
    return True

  def _adopt_optimized(self) -> None:
    self._optimizing = None
    (result,) = self._optimized
    if isinstance(result, Exception):
      logging.warning("the optimized training step failed to compile; the quick one goes on: %s",
                      result)  # fmt: skip
      self.tier = "quick (optimizing failed)"
      return
    self._program, self.tier = result, "optimized"
    logging.info("the optimized training step (compiled in %.1f s beside training) takes over",
                 self.optimize_seconds)  # fmt: skip

  def finish_optimizing(self) -> None:
    """Waits for a background compilation started by ``optimize_in_background`` (a process must
    not exit while XLA compiles in one of its threads) and adopts its program."""
    if self._optimizing is not None:
      self._optimizing.join()
      self._adopt_optimized()

  def lower(self, *args: Any) -> Any:
    """``jax.jit(...).lower`` of what the steps run (for benchmarks: ``.compile()``)."""
    if self._jitted is None:
      self._jitted = self._build(args)
    return self._jitted.lower(*args)
