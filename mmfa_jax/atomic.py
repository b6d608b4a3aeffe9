"""Files and folders that appear whole or not at all: the one way the package writes its outputs.

A writer works on a staging path beside the final one (the same folder, so the rename cannot cross
file systems): ``.NAME.partial-PID-THREAD.SUFFIX``, hidden, named for the process and the thread
(two threads writing the same output never share a staging file), the suffix kept for libraries
that pick a format by it. When the writer is done it is renamed into place; if it fails
it is removed, and an older file or folder of the final name stays as it was. ``cli`` recognises
the staging name in error messages and reports the final path instead.

- ``staged(path)``: a context manager yielding the staging path (a file, or a folder the caller
  makes and fills);
- ``write_atomically(path, data)``: bytes or text in one call;
- ``staging_name`` / ``move_into_place`` / ``discard``: the steps, for writers whose life is not
  one ``with`` block (``VideoWriter``, the evaluation's output folder).

Checkpoints keep their own scheme (``checkpoints.py``: the previous step's folder is retired, not
replaced).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator


def staging_name(path: str | os.PathLike) -> str:
  """The staging path of ``path`` for this thread: ``FOLDER/.STEM.partial-PID-THREAD.SUFFIX``
  (absolute; THREAD is the native thread id)."""
  folder, name = os.path.split(os.path.abspath(os.fspath(path)))
  stem, suffix = os.path.splitext(name)
  writer = f"{os.getpid()}-{threading.get_native_id()}"
  return os.path.join(folder, f".{stem}.partial-{writer}{suffix}")


def move_into_place(staging: str, path: str | os.PathLike) -> None:
  """Renames a finished staging file or folder to ``path``; an older folder there is replaced
  (renamed aside first, removed after), an older file by the rename itself."""
  path = os.fspath(path)
  if os.path.isdir(staging) and os.path.isdir(path):
    old = f"{staging}.old"
    os.replace(path, old)
    os.replace(staging, path)
    shutil.rmtree(old)
  else:
    os.replace(staging, path)


def discard(staging: str) -> None:
  """Removes a staging file or folder if it is there."""
  if os.path.isdir(staging) and not os.path.islink(staging):
    shutil.rmtree(staging, ignore_errors=True)
  elif os.path.lexists(staging):
    os.remove(staging)


@contextlib.contextmanager
def staged(path: str | os.PathLike) -> Iterator[str]:
  """Yields the staging path of ``path`` (its folder made); moves it into place when the block
  ends normally and removes it when the block raises (the exception goes on)."""
  staging = staging_name(path)
  os.makedirs(os.path.dirname(staging), exist_ok=True)
  discard(staging)  # left by an earlier process (and thread) of the same ids that was killed
  try:
    yield staging
    move_into_place(staging, path)
  finally:
    discard(staging)  # gone already when moved into place


def write_atomically(path: str | os.PathLike, data: bytes | str) -> str:
  """Writes ``data`` (bytes, or text as UTF-8) to ``path`` through ``staged``; returns ``path``."""
  with staged(path) as staging, open(staging, "wb") as handle:
    handle.write(data.encode() if isinstance(data, str) else data)
  return os.fspath(path)
