"""What a converter KIND is: ``ConverterSpec`` (the registry's entries, ``convert.CONVERTERS``) and
the ``Conversion`` it returns. Apart from ``convert.py`` so that per-kind modules can define their
spec without importing the registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from pretrained_converters.common import read_weights_file


@dataclasses.dataclass
class Conversion:
  """Converted variables and what was mapped: ``rows`` of (network, tensors, parameters)."""

  kind: str
  variables: dict[str, Any]
  rows: list[tuple[str, int, int]]
  ignored: list[str]


@dataclasses.dataclass(frozen=True)
class ConverterSpec:
  """One KIND of ``tools/convert_torch_weights.py``.

  Attributes:
    kind: the command-line name, also the ``kind`` of the converted directory's metadata.
    description: the upstream file and what it becomes (the tool's help text).
    tolerance: ``--verify`` passes when no output differs from PyTorch's by more than this.
    convert: ``(path, config, generator) -> Conversion``.
    verify: ``(load, rng, variables, config, generator) -> {output: max |flax - torch|}``, run by
      ``verify`` under ``torch.no_grad()``: ``load(torch_module, entry=None, strict=True)`` loads
      the file (or its ``entry``) into a ``torch_reference`` module, ``rng`` is seeded with 0.
    config: for a kind whose networks a config describes, the config file used when ``--config``
      is not given (``--config`` and ``--generator`` only apply to such kinds); None otherwise.
    read: ``--input`` -> the tensors ``verify`` loads into the PyTorch definition.
    input_files: ``--input`` -> the files it names (hashed into the metadata).
  """

  kind: str
  description: str
  tolerance: float
  convert: Callable[[str, Any, str], Conversion]
  verify: Callable[..., dict[str, float]]
  config: str | None = None
  read: Callable[[str], Mapping[str, Any]] = read_weights_file
  input_files: Callable[[str], tuple[str, ...]] = lambda path: (path,)
