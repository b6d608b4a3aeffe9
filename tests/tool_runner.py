"""Runs a repository command-line tool in a subprocess, as a user would."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_tool(script: str, *args) -> subprocess.CompletedProcess:
  """``python tools/<script> ARGS`` from the repository root, CPU only; output captured as text."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "tools", script), *map(str, args)],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=600,
  )


def interrupt_when(command: list[str], said_pattern: bytes, timeout: float = 240):
  """Runs ``command`` (CPU only, from the repository root), sends it SIGINT once its stderr matches
  the regular expression ``said_pattern``, and returns ``(still running when signalled, exit
  status, everything it said)``. The child gets SIGINT's default action, as a terminal gives it
  (a CI runner started in the background may ignore SIGINT, and the child would inherit that)."""
  import re
  import signal
  import time

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
  process = subprocess.Popen(command, stderr=subprocess.PIPE, env=env, cwd=ROOT, preexec_fn=restore)
  said, deadline, pattern = b"", time.monotonic() + timeout, re.compile(said_pattern)
  while not pattern.search(said) and time.monotonic() < deadline:
    chunk = os.read(process.stderr.fileno(), 4096)
    if not chunk:  # the process ended before it was interrupted
      break
    said += chunk
  running = process.poll() is None
  if running:
    process.send_signal(signal.SIGINT)
  said += process.stderr.read()
  process.wait(timeout=120)
  return running, process.returncode, said.decode(errors="replace")
