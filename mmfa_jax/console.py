"""What a command prints: the project's own log lines and its progress bars; other libraries'
INFO records (orbax, absl, jax) only when asked for with ``--verbosity=1``; warnings and errors
always.

``quiet_library_logs(verbosity)`` puts a filter on the handlers of the root logger (absl's
included): a record passes when it is a warning or worse, when ``verbosity >= 1``, or when the
code that logged it lives in this package, ``tools/`` or ``benchmarks/``.
"""

from __future__ import annotations

import logging
import os

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_PACKAGE)
PROJECT_DIRECTORIES = tuple(
  os.path.join(path, "")
  for path in (_PACKAGE, os.path.join(_ROOT, "tools"), os.path.join(_ROOT, "benchmarks"))
)


def from_project(pathname: str) -> bool:
  """Whether a log record's ``pathname`` is a file of this project (not of an installed library)."""
  return os.path.abspath(pathname).startswith(PROJECT_DIRECTORIES)


class ProjectRecords(logging.Filter):
  """Passes warnings and worse, and the project's own records; with ``verbosity >= 1``, all."""

  def __init__(self, verbosity: int = 0):
    super().__init__()
    self.verbosity = verbosity

  def filter(self, record: logging.LogRecord) -> bool:
    return self.verbosity >= 1 or record.levelno >= logging.WARNING or from_project(record.pathname)


def quiet_library_logs(verbosity: int = 0) -> ProjectRecords:
  """Filters the root logger's handlers (absl's included) with ``ProjectRecords(verbosity)``,
  replacing a filter an earlier call put there. Returns the filter."""
  chosen = ProjectRecords(verbosity)
  handlers = list(logging.getLogger().handlers)
  try:
    from absl import logging as absl_logging

    absl_handler = absl_logging.get_absl_handler()
    if absl_handler not in handlers:
      handlers.append(absl_handler)
  except ImportError:
    pass
  for handler in handlers:
    for old in [f for f in handler.filters if isinstance(f, ProjectRecords)]:
      handler.removeFilter(old)
    handler.addFilter(chosen)
  return chosen
