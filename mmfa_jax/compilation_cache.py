"""The compilation caches every mmfa_jax command turns on: a second run compiles nothing new.

``enable_compilation_cache()`` points JAX's persistent compilation cache (compiled executables,
keyed by the program, its shapes, the device kind and the jax/XLA versions) and XLA's GPU autotune
cache (the convolution and GEMM algorithms autotuning picked, per fusion) at one directory:

- ``$MMFA_JAX_CACHE_DIR`` when it is set (``none`` turns both caches off);
- otherwise ``~/.cache/mmfa_jax/jax`` (``$XDG_CACHE_HOME/mmfa_jax/jax`` when that is set).

Every compiled program is cached, however quick its compilation (a resumed run then compiles
nothing at all). Entries of other jax versions or devices are never read; delete the directory to
reclaim its space. It is safe to share between processes and machines of one kind; in a
multi-process run only process 0 writes the autotune results.
"""

from __future__ import annotations

import os
import threading

import jax
from absl import logging

ENVIRONMENT_VARIABLE = "MMFA_JAX_CACHE_DIR"


def cache_directory() -> str | None:
  """The directory the caches use under the current environment, or ``None`` (turned off)."""
  value = os.environ.get(ENVIRONMENT_VARIABLE)
  if value is not None:
    value = value.strip()
    if value.lower() in ("", "none", "off", "0"):
      return None
    return os.path.abspath(os.path.expanduser(value))
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mmfa_jax", "jax")


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache and XLA's GPU autotune cache in
  ``cache_directory()``; returns that directory (``None``: the environment turned them off).

  Call it before the first compilation. A directory that cannot be created only costs the cache
  (a warning), never the run.
  """
  directory = cache_directory()
  if directory is None:
    logging.info("compilation cache off (%s=none)", ENVIRONMENT_VARIABLE)
    return None
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as error:
    logging.warning("compilation cache off: cannot create %s (%s)", directory, error)
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  # Cache every program: the quick ones add up too (hundreds on a GPU), and a resumed run should
  # compile nothing.
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  # XLA's per-fusion GPU autotune results in DIR/xla_gpu_per_fusion_autotune_cache_dir.
  jax.config.update(
    "jax_persistent_cache_enable_xla_caches", "xla_gpu_per_fusion_autotune_cache_dir"
  )
  logging.info("compilation cache: %s", directory)
  return directory


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
  """Counts, while active, the programs XLA compiled (``compiled``, ``compile_seconds``) and those
  loaded from the persistent cache instead (``loaded``, ``load_seconds``); a context manager or
  ``start``/``stop``.

  Built on JAX's monitoring events, so it sees every compilation in the process: jitted steps,
  eager operations, initialisers. JAX times a cache load as a compilation too; the cache-hit event
  that comes first in the same thread tells the two apart.
  """

  def __init__(self) -> None:
    self.compiled = 0
    self.compile_seconds = 0.0
    self.loaded = 0
    self.load_seconds = 0.0
    self._hit = threading.local()

  def _on_duration(self, event: str, duration: float, **_: object) -> None:
    if event != BACKEND_COMPILE_EVENT:
      return
    if getattr(self._hit, "pending", False):
      self._hit.pending = False
      self.loaded += 1
      self.load_seconds += duration
    else:
      self.compiled += 1
      self.compile_seconds += duration

  def _on_event(self, event: str, **_: object) -> None:
    if event == CACHE_HIT_EVENT:
      self._hit.pending = True

  def start(self) -> CompileCounter:
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def stop(self) -> None:
    jax.monitoring.unregister_event_duration_listener(self._on_duration)
    jax.monitoring.unregister_event_listener(self._on_event)

  def __enter__(self) -> CompileCounter:
    return self.start()

  def __exit__(self, *exc: object) -> None:
    self.stop()

  def summary(self) -> str:
    return (
      f"{self.compiled} program{'s' if self.compiled != 1 else ''} compiled "
      f"({self.compile_seconds:.1f} s), {self.loaded} loaded from the compilation cache "
      f"({self.load_seconds:.1f} s)"
    )


def seconds_since_process_start() -> float | None:
  """Wall-clock seconds since this process started (Linux ``/proc``), or ``None`` elsewhere."""
  try:
    with open("/proc/self/stat") as handle:
      fields = handle.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as handle:
      uptime = float(handle.read().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in ticks
  except (OSError, ValueError, IndexError):
    return None
