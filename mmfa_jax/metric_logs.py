"""A training run's metrics: ``metrics.jsonl`` (one JSON object per logged step), the console and
TensorBoard event files when a writer is installed; the window of steps a record averages."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from absl import logging

from mmfa_jax.atomic import write_atomically

# Metrics summed over a logging window (counts); every other metric is averaged.
COUNTED_METRICS = ("generator_skipped", "discriminator_skipped", "skipped_samples")


def _summary_writer_class() -> type | None:
  """tensorboardX's ``SummaryWriter``, else torch's when ``tensorboard`` is installed, else None.

  Looks before importing: torch's writer needs the ``tensorboard`` package, and importing torch
  only to find it missing cost 1.5-2.3 s of every run's start-up."""

  if importlib.util.find_spec("tensorboardX") is not None:
    from tensorboardX import SummaryWriter

    return SummaryWriter
  if importlib.util.find_spec("tensorboard") is not None and importlib.util.find_spec("torch"):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter
  return None


class MetricWriter:
  """Scalars to ``WORKDIR/metrics.jsonl`` (one JSON object per line), the console and, when
  ``tensorboardX`` (or torch with ``tensorboard``) is installed, TensorBoard event files in
  ``WORKDIR/tensorboard``. Only process 0 writes (the others' writers are no-ops)."""

  def __init__(self, workdir: str, enabled: bool = True, resumed_step: int | None = None):
    """``resumed_step``: the step a run goes on from (0 for a new run). Records of later steps
    are removed (a run stopped after logging a step but before checkpointing it logs that step
    again), and so is a line cut short by a kill; TensorBoard purges those steps too."""
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tensorboard = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resumed_step is not None and os.path.exists(self.path):
      self._drop_records_after(resumed_step)
    SummaryWriter = _summary_writer_class()
    if SummaryWriter is None:
      logging.info("TensorBoard writer not installed (pip install tensorboardX); JSONL only")
    else:
      purge = {} if resumed_step is None else {"purge_step": resumed_step + 1}
      self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), **purge)

  def _drop_records_after(self, step: int) -> None:
    """Rewrites ``metrics.jsonl`` (atomically) without the records after ``step``."""
    with open(self.path) as handle:
      lines = [line for line in handle if line.strip()]
    kept = [line for line in lines if (_parse(line) or {}).get("step", step + 1) <= step]
    if len(kept) == len(lines):
      return
    write_atomically(self.path, "".join(ln if ln.endswith("\n") else ln + "\n" for ln in kept))
    logging.info("%s: removed %d records after step %d (resumed there)", self.path,
                 len(lines) - len(kept), step)  # fmt: skip

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
    with open(self.path, "a") as handle:
      handle.write(json.dumps(record) + "\n")
    logging.info(
      "step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "step")
    )
    if self._tensorboard is not None:
      for key, value in scalars.items():
        self._tensorboard.add_scalar(key, float(value), int(step))
      self._tensorboard.flush()

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


def _parse(line: str) -> dict | None:
  """One record, or None for a line cut short (a process killed while writing it)."""
  try:
    return json.loads(line)
  except json.JSONDecodeError:
    return None


def read_metrics(workdir: str) -> list[dict[str, float]]:
  """The records of ``WORKDIR/metrics.jsonl``, in order (a last line cut short by a kill is
  left out; a damaged line elsewhere is an error naming the file and line)."""
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as handle:
    lines = [line for line in handle if line.strip()]
  records = [_parse(line) for line in lines]
  for number, record in enumerate(records[:-1], 1):
    if record is None:
      raise ValueError(f"{path}: line {number} is not a JSON record")
  return [r for r in records if r is not None]


class MetricWindow:
  """Metrics of the steps since the last log record, summed on the device (no per-step host
  sync); ``COUNTED_METRICS`` are also totalled over the run."""

  def __init__(self):
    self.totals = {name: 0 for name in COUNTED_METRICS}
    self._reset()

  def _reset(self) -> None:
    self.sums, self.steps, self.start = None, 0, time.perf_counter()

  def add(self, metrics: Mapping[str, jax.Array]) -> None:
    self.sums = metrics if self.sums is None else jax.tree.map(jnp.add, self.sums, metrics)
    self.steps += 1

  def scalars(self, batch_size: int, learning_rates: Mapping[str, float]) -> dict[str, float]:
    """Counts summed and everything else averaged over the window, the run's totals, the
    learning rates and ``images_per_second``; starts the next window."""
    values = jax.device_get(self.sums)
    elapsed = time.perf_counter() - self.start
    scalars = {
      k: float(v) if k in COUNTED_METRICS else float(v) / self.steps for k, v in values.items()
    }
    for name in COUNTED_METRICS:
      self.totals[name] += int(values[name])
      scalars[f"total_{name}"] = self.totals[name]
    scalars.update(learning_rates)
    scalars["images_per_second"] = self.steps * batch_size / elapsed
    self._reset()
    return scalars
