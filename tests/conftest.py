"""Test set-up: 8 fake CPU devices (for mesh/sharding tests), absl flags marked as parsed, the
user's mmfa_jax compilation cache out of reach, and a persistent compilation cache for this session (tests that build a second trainer for the same
config, e.g. to resume, load its compiled step instead of compiling it again).

Both must happen before JAX initialises its backends or grain starts worker processes, so they
run at import time of this file, which pytest loads before any test module.
"""

import os
import tempfile

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Commands run by tests (in this process or as subprocesses) never touch the user's compilation
# cache: "none" leaves JAX's cache settings alone. Tests of the cache set their own directory.
os.environ["MMFA_JAX_CACHE_DIR"] = "none"

import jax
from absl import flags

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 8)
jax.config.update(
  "jax_compilation_cache_dir",
  os.environ.get("MMFA_TEST_COMPILATION_CACHE") or tempfile.mkdtemp(prefix="mmfa-jax-test-cache-"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
flags.FLAGS.mark_as_parsed()
