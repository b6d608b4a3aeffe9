"""Test set-up: 8 fake CPU devices (for mesh/sharding tests) and absl flags marked as parsed.

Both must happen before JAX initialises its backends or grain starts worker processes, so they
run at import time of this file, which pytest loads before any test module.
"""

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
from absl import flags

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)
flags.FLAGS.mark_as_parsed()
