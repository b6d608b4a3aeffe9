"""Per-operation time tables from a ``jax.profiler`` trace and the optimized HLO of the program.

XLA runs a compiled program as a sequence of thunks, one per HLO instruction of the optimized
module (a fusion, a convolution, a custom call...); the profiler records one event per thunk, named
after the instruction. This module joins those events with the instructions' metadata (the JAX name
stack, which holds the Flax module path and ``transpose(...)`` for the backward pass) to say where
the time of a training step or an animation call goes: per kind of operation, per network scope
and per instruction. ``benchmarks/op_profile.py`` prints the tables.

Times are sums of thunk durations; on a multi-core CPU thunks can overlap, so the sum can exceed
the wall time.
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Opcodes that name what a fusion does, most telling first.
_HEAVY_OPCODES = (
  "convolution",
  "dot",
  "scatter",
  "gather",
  "reduce-window",
  "select-and-scatter",
  "all-reduce",
  "reduce",
  "transpose",
  "concatenate",
  "pad",
  "dynamic-slice",
  "dynamic-update-slice",
)
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+)\s*=\s*.*?\s([a-z][a-z0-9\-]*)\((.*)$")
_CALLS = re.compile(r"calls=%([^\s,}]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_WRAPPER = re.compile(r"^[\w\-]+\((.*)\)$")


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One instruction of an optimized HLO module.

  ``category``: its opcode, or for a fusion ``fusion:<op>`` with ``<op>`` the most telling opcode
  inside it (``convolution``, ``dot``, ``scatter``...; ``elementwise`` when none).
  ``op_name``: the JAX name stack of its metadata; for a fusion without one, that of the most
  telling instruction inside it (empty when there is none).
  """

  name: str
  opcode: str
  category: str
  op_name: str


def parse_hlo_module(text: str) -> dict[str, Instruction]:
  """Instructions of an HLO module's text (``compiled.as_text()`` or an XLA dump), by name."""
  opcodes_of: dict[str, set[str]] = collections.defaultdict(set)
  # per computation, (rank of the most telling opcode, its op_name): the name stack of a fusion
  # that has none of its own (XLA's library fusions, e.g. ``ynn_fusion``, drop it)
  named_inside: dict[str, tuple[int, str]] = {}
  found: list[tuple[str, str, str, str]] = []  # (name, opcode, called computation, op_name)
  current = None
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = header.group(1)
      continue
    if line.strip() == "}":
      current = None
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, opcode, rest = match.groups()
    calls = _CALLS.search(rest)
    op_name = _OP_NAME.search(rest)
    if current is not None:
      opcodes_of[current].add(opcode)
      rank = _HEAVY_OPCODES.index(opcode) if opcode in _HEAVY_OPCODES else len(_HEAVY_OPCODES)
      if op_name and (current not in named_inside or rank < named_inside[current][0]):
        named_inside[current] = (rank, op_name.group(1))
    found.append(
      (name, opcode, calls.group(1) if calls else "", op_name.group(1) if op_name else "")
    )

  instructions = {}
  for name, opcode, called, op_name in found:
    category = opcode
    if opcode == "fusion":
      inside = opcodes_of.get(called, set())
      telling = next((op for op in _HEAVY_OPCODES if op in inside), "elementwise")
      category = f"fusion:{telling}"
      op_name = op_name or named_inside.get(called, (0, ""))[1]
    instructions[name] = Instruction(name, opcode, category, op_name)
  return instructions


def name_scope(op_name: str, depth: int) -> tuple[str, bool]:
  """``(scope, backward)`` of a JAX name stack: the first ``depth`` components after ``jit(f)``,
  with transformation wrappers (``jvp(...)``, ``transpose(...)``, ``vmap(...)``) removed and the
  primitive's own name dropped; ``backward`` when the stack is inside ``transpose(...)``.

  ``"jit(step)/transpose(jvp(Model))/generator/conv/conv_general_dilated"`` at depth 2 gives
  ``("Model/generator", True)``; a step run from its exported program (``traced_steps``) has
  ``call_exported/FUNCTION/`` after ``jit(f)``, which is dropped too.
  """
  parts = [p for p in op_name.split("/") if p]
  if parts and parts[0].startswith("jit("):
    parts = parts[1:]
  if parts[:1] == ["call_exported"]:  # a step run from its traced program (traced_steps)
    parts = parts[2:]
  backward = any(p.startswith("transpose(") for p in parts)
  cleaned = []
  for part in parts[:-1]:  # the last component is the primitive
    while True:
      wrapped = _WRAPPER.match(part)
      if not wrapped:
        break
      part = wrapped.group(1)
    if part:
      cleaned.append(part)
  return "/".join(cleaned[:depth]) or "(top level)", backward


def thunk_seconds(xplane_path: str, names: Iterable[str]) -> dict[str, float]:
  """Seconds per instruction name in a ``jax.profiler`` trace (``*.xplane.pb``).

  On an accelerator: the device planes' kernel times, each kernel attributed to the instruction its
  ``hlo_op`` statistic names (a kernel's own name is a cuDNN or fusion kernel name, and the host's
  thunk events of the same instructions time only the launches). On a CPU, or a trace without such
  statistics: the host plane's thunk events named after the instructions (every thread but
  Python's)."""
  from jax.profiler import ProfileData

  return _seconds_by_instruction(ProfileData.from_file(xplane_path), set(names))


def _seconds_by_instruction(data: Any, wanted: set[str]) -> dict[str, float]:
  """``thunk_seconds`` of a loaded ``ProfileData``."""
  device: dict[str, float] = collections.defaultdict(float)
  host: dict[str, float] = collections.defaultdict(float)
  for plane in data.planes:
    on_device = plane.name.startswith("/device:")
    for line in plane.lines:
      if line.name == "python":
        continue
      for event in line.events:
        if on_device:
          name = dict(event.stats).get("hlo_op", event.name)
          if name in wanted:
            device[name] += event.duration_ns * 1e-9
        elif event.name in wanted:
          host[event.name] += event.duration_ns * 1e-9
  return dict(device or host)


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a table: ``key``, seconds, share of the total, instruction count."""

  key: str
  seconds: float
  share: float
  count: int


def time_table(
  instructions: Mapping[str, Instruction],
  seconds: Mapping[str, float],
  by: str,
  depth: int = 2,
) -> list[Row]:
  """Rows, longest first, of the time of ``seconds`` grouped ``by`` ``'category'``, ``'scope'``
  (``name_scope`` at ``depth``, with `` (bwd)`` for backward) or ``'instruction'``."""
  totals: dict[str, float] = collections.defaultdict(float)
  counts: dict[str, int] = collections.defaultdict(int)
  for name, value in seconds.items():
    instruction = instructions[name]
    if by == "category":
      key = instruction.category
    elif by == "scope":
      scope, backward = name_scope(instruction.op_name, depth)
      key = scope + (" (bwd)" if backward else "")
    elif by == "instruction":
      scope, backward = name_scope(instruction.op_name, depth)
      key = f"{name} [{instruction.category}] {scope}" + (" (bwd)" if backward else "")
    else:
      raise ValueError(f"by must be 'category', 'scope' or 'instruction', got {by!r}")
    totals[key] += value
    counts[key] += 1
  total = sum(totals.values()) or 1.0
  rows = [Row(k, v, v / total, counts[k]) for k, v in totals.items()]
  return sorted(rows, key=lambda row: -row.seconds)


def format_table(title: str, rows: list[Row], top: int) -> str:
  """A printable table of the first ``top`` rows and the rest summed."""
  lines = [title, f"{'seconds':>9} {'share':>6} {'ops':>5}  what"]
  for row in rows[:top]:
    lines.append(f"{row.seconds:>9.3f} {row.share:>6.1%} {row.count:>5}  {row.key}")
  rest = rows[top:]
  if rest:
    seconds = sum(r.seconds for r in rest)
    share = sum(r.share for r in rest)
    count = sum(r.count for r in rest)
    lines.append(f"{seconds:>9.3f} {share:>6.1%} {count:>5}  ({len(rest)} more)")
  return "\n".join(lines)
