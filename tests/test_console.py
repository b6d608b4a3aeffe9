"""The quiet console: the project's own records and warnings pass, other libraries' INFO records
only with ``--verbosity=1``."""

import logging
import os
import subprocess
import sys
import textwrap

from tool_runner import ROOT

from mmfa_jax import console


def _record(pathname: str, level: int) -> logging.LogRecord:
  return logging.LogRecord("absl", level, pathname, 1, "message", None, None)


def test_filter_passes_the_project_and_warnings():
  package = os.path.dirname(console.__file__)
  ours = os.path.join(package, "train.py")
  tool = os.path.join(ROOT, "tools", "convert_torch_weights.py")
  library = os.path.join(sys.prefix, "lib", "site-packages", "orbax", "checkpoint", "x.py")
  quiet, verbose = console.ProjectRecords(0), console.ProjectRecords(1)
  assert quiet.filter(_record(ours, logging.INFO))
  assert quiet.filter(_record(tool, logging.INFO))
  assert not quiet.filter(_record(library, logging.INFO))
  assert quiet.filter(_record(library, logging.WARNING))
  assert verbose.filter(_record(library, logging.INFO))
  # A sibling directory whose name starts like the package's is not the package.
  assert not console.from_project(package + "_extras/x.py")


def test_absl_command_output(tmp_path):
  script = tmp_path / "command.py"
  script.write_text(
    textwrap.dedent(
      """
      from absl import app, logging
      from tqdm import tqdm
      from mmfa_jax import compilation_cache
      from mmfa_jax.console import configure_console

      def main(argv):
        configure_console(logging.get_verbosity())
        bar = tqdm(total=2, desc="progress-bar")
        bar.update(1)
        logging.info("outside-info")
        logging.warning("outside-warning")
        compilation_cache.enable_compilation_cache()  # logs "compilation cache: ..." (INFO)
        bar.update(1)
        bar.close()

      app.run(main)
      """
    )
  )
  env = dict(os.environ, PYTHONPATH=ROOT, MMFA_JAX_CACHE_DIR="none")

  def run(*flags: str) -> str:
    result = subprocess.run(
      [sys.executable, str(script), *flags], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr

  quiet = run()
  assert "outside-warning" in quiet and "compilation cache off" in quiet
  assert "outside-info" not in quiet
  # Each log line starts a line of its own, above the bar (never after the bar's text).
  for piece in quiet.replace("\r", "\n").split("\n"):
    if "outside-warning" in piece or "compilation cache off" in piece:
      assert piece[0] in "IW" and "progress-bar" not in piece, piece
  assert quiet.count("outside-warning") == 1
  verbose = run("--verbosity=1")
  assert "outside-info" in verbose and "outside-warning" in verbose
  # Calling it again replaces the filter instead of adding a second one.
  handler = logging.getLogger().handlers
  first = console.configure_console(0)
  second = console.configure_console(1)
  for h in handler:
    assert first not in h.filters and h.filters.count(second) == 1
