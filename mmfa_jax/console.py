"""What a command prints: the project's own log lines and its progress bars; other libraries'
INFO records (orbax, absl, jax) only when asked for with ``--verbosity=1``; warnings and errors
always.

``configure_console(verbosity)`` puts a filter on the handlers of the root logger (absl's
included): a record passes when it is a warning or worse, when ``verbosity >= 1``, or when the
code that logged it lives in this package, ``tools/`` or ``benchmarks/``. Those handlers then write
through ``tqdm.write``, so a log line goes above a running progress bar instead of onto its line.
"""

from __future__ import annotations

import logging
import os
from typing import Any

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


class AboveProgressBars:
  """A text stream that writes through ``tqdm.write``: running bars on ``stream`` are cleared,
  the text written, the bars drawn again below it."""

  def __init__(self, stream: Any):
    self.stream = stream

  def write(self, text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=self.stream, end="")

  def flush(self) -> None:
    self.stream.flush()

  def close(self) -> None:
    """Flushes only: the stream underneath (stderr) belongs to the process."""
    self.flush()

  def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
    return getattr(self.stream, name)


def _handlers() -> list[logging.Handler]:
  """The root logger's handlers, absl's (and the stream handler behind it) included."""
  handlers = list(logging.getLogger().handlers)
  try:
    from absl import logging as absl_logging

    absl_handler = absl_logging.get_absl_handler()
    handlers += [absl_handler, absl_handler.python_handler]
  except (ImportError, AttributeError):
    pass
  unique = []
  for handler in handlers:
    if handler not in unique:
      unique.append(handler)
  return unique


def configure_console(verbosity: int = 0) -> ProjectRecords:
  """Filters the root logger's handlers (absl's included) with ``ProjectRecords(verbosity)``,
  replacing a filter an earlier call put there, and makes those writing to a stream write above
  progress bars (``AboveProgressBars``). Returns the filter."""
  chosen = ProjectRecords(verbosity)
  for handler in _handlers():
    for old in [f for f in handler.filters if isinstance(f, ProjectRecords)]:
      handler.removeFilter(old)
    handler.addFilter(chosen)
    stream = getattr(handler, "stream", None)
    if isinstance(handler, logging.StreamHandler) and not isinstance(stream, AboveProgressBars):
      handler.setStream(AboveProgressBars(stream))
  return chosen
