"""Prints what a bug report needs: versions of the stack, JAX devices, optional extras.

python tools/env_info.py
"""

from __future__ import annotations

import importlib
import platform
import sys

PACKAGES = (
  "mmfa_jax", "jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "grain",
  "tensorflow_datasets", "numpy", "scipy", "chex", "ml_collections", "torch", "av", "skimage",
)  # fmt: skip


def main() -> None:
  print(f"python {sys.version.split()[0]} on {platform.platform()}")
  for name in PACKAGES:
    try:
      module = importlib.import_module(name)
      print(f"  {name:<20} {getattr(module, '__version__', 'installed')}")
    except ImportError:
      print(f"  {name:<20} not installed")
  import jax

  devices = jax.devices()
  print(f"jax backend {jax.default_backend()}: {len(devices)} device(s), {devices[0].device_kind}")
  print(f"process {jax.process_index()} of {jax.process_count()}")


if __name__ == "__main__":
  main()
