"""Evaluation during training, declared in the config (big_vision style).

``config.evals`` maps a name to an evaluator: ``every_steps`` (0: off; it also runs at the last step),
``data`` (``'synthetic'``: held-out synthetic heads, or a folder root with ``test/`` videos),
``protocol`` (``'reconstruction'`` or ``'cross_identity'``, as ``mmfa_jax.evaluate``), ``num_videos``,
``max_frames``, ``metrics`` (of ``l1``, ``psnr``, ``ssim``) and ``batch_size``. Each one animates its
videos with the current generator (in inference mode, as ``Animator``; its parameter average
when ``optim.ema_decay`` > 0) and its averages are written
to ``metrics.jsonl`` / TensorBoard beside the losses as ``eval/<name>/<metric>``. Each evaluation
also draws what it scored, the model a user would load: ``samples/eval_<name>_step_NNNNNNN.png``,
one row per video (at most 4) of source | driving | generated | target at its last frame.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging

PIXEL_METRICS = ("l1", "psnr", "ssim")
GRID_ROWS = 4  # videos drawn in each evaluation's grid


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One entry of ``config.evals`` (module docstring)."""

  name: str
  every_steps: int
  data: str = "synthetic"
  protocol: str = "reconstruction"
  num_videos: int = 4
  max_frames: int = 8
  metrics: tuple[str, ...] = PIXEL_METRICS
  batch_size: int = 8

  def __post_init__(self) -> None:
    unknown = [m for m in self.metrics if m not in PIXEL_METRICS]
    if unknown:
      raise ValueError(f"config.evals.{self.name}.metrics: {unknown} not among {PIXEL_METRICS}")
    if self.protocol not in ("reconstruction", "cross_identity"):
      raise ValueError(f"config.evals.{self.name}.protocol: {self.protocol!r} is not a protocol")
    if self.protocol == "cross_identity" and self.data != "synthetic":
      raise ValueError(
        f"config.evals.{self.name}: cross_identity has pixel targets on synthetic data only"
      )
    for field in ("every_steps", "num_videos", "max_frames", "batch_size"):
      if getattr(self, field) < (0 if field == "every_steps" else 1):
        raise ValueError(f"config.evals.{self.name}.{field} is {getattr(self, field)}")

  def due(self, step: int, last_step: int) -> bool:
    return self.every_steps > 0 and (step % self.every_steps == 0 or step == last_step)

  def items(self, image_size: int) -> Any:
    from mmfa_jax import evaluate

    if self.data == "synthetic":
      return evaluate.synthetic_items(self.protocol, image_size, self.num_videos, self.max_frames)
    return evaluate.folder_items(
      self.data, self.protocol, image_size, self.num_videos, self.max_frames, None
    )

  def run(
    self,
    model_config: Any,
    image_size: int,
    variables: Mapping[str, Any],
    frozen: Any,
    max_items: int | None = None,
    grid_path: str | None = None,
  ) -> dict[str, float]:
    """``{'eval/<name>/<metric>': average}`` of the model ``variables`` (over the first
    ``max_items`` readable videos or pairs when given); with ``grid_path``, also the PNG grid of
    the module docstring there."""
    from mmfa_jax.inference import Animator
    from mmfa_jax.scoring import Scorer

    animator = Animator(
      model_config, variables, image_size=image_size, batch_size=self.batch_size, frozen=frozen
    )
    mode = "absolute" if self.protocol == "reconstruction" else "relative"
    scorer = Scorer(self.metrics, None, None)
    rows: list[tuple[np.ndarray, ...]] = []  # (source, driving, generated, target), last frames
    done = 0
    for item in self.items(image_size):
      if item.source is None:  # unreadable video
        continue
      if max_items is not None and done == max_items:
        break
      done += 1
      generated = np.stack(list(animator.iter_animate(item.source, item.driving, mode=mode)))
      quantised = np.round(generated * 255.0) / 255.0  # as saved 8-bit frames
      scorer.add(quantised.astype(np.float32), item.target, item.target)
      if len(rows) < GRID_ROWS:
        rows.append((item.source, item.driving[-1], quantised[-1], item.target[-1]))
    if grid_path is not None and rows:
      _save_grid(grid_path, rows)
    return {f"eval/{self.name}/{k}": v for k, v in scorer.summary().items()}


def _save_grid(path: str, rows: Sequence[tuple[np.ndarray, ...]]) -> None:
  """Source | driving | generated | target, one row per video (``visualize.sample_grid``)."""
  from mmfa_jax.visualize import sample_grid, save_png

  names = ("source", "driving", "generated", "target")
  columns = [(name, np.stack([row[c] for row in rows])) for c, name in enumerate(names)]
  save_png(path, sample_grid(columns, max_rows=GRID_ROWS))


def make_evaluators(config: Any) -> list[Evaluator]:
  """The evaluators of ``config.evals`` that are on (``every_steps`` > 0)."""
  evaluators = []
  for name, spec in dict(config.get("evals") or {}).items():
    spec = dict(spec)
    if "metrics" in spec:
      spec["metrics"] = tuple(spec["metrics"])
    evaluator = Evaluator(name=name, **spec)
    if evaluator.every_steps > 0:
      evaluators.append(evaluator)
  return evaluators


def run_due(
  evaluators: Sequence[Evaluator],
  config: Any,
  state: Any,
  frozen: Mapping[str, Any],
  step: int,
  last_step: int,
  samples_dir: str | None = None,
) -> dict[str, float]:
  """The scalars of every evaluator due at ``step`` (empty when none is): ``state`` is the
  generator's ``TrainState``. Runs on every process (the arrays are global), written by the
  caller's writer; with ``samples_dir``, process 0 also writes each evaluation's grid there
  (``eval_<name>_step_NNNNNNN.png``)."""
  scalars: dict[str, float] = {}
  variables = {"params": state.averaged_params, "batch_stats": state.batch_stats}
  for evaluator in evaluators:
    if evaluator.due(step, last_step):
      grid_path = None
      if samples_dir is not None and jax.process_index() == 0:
        grid_path = os.path.join(samples_dir, f"eval_{evaluator.name}_step_{step:07d}.png")
      scalars.update(
        evaluator.run(config.model, config.image_size, variables, frozen, grid_path=grid_path)
      )
  return scalars


def compile_ahead(
  evaluators: Sequence[Evaluator],
  config: Any,
  state: Any,
  frozen: Mapping[str, Any],
  start: threading.Event | None = None,
) -> threading.Thread:
  """Starts a thread that runs each evaluator on its first video with a copy of ``state``'s
  variables (the training step donates the originals) and discards the result: the evaluation
  programs compile while the main thread traces and compiles the training step, on the core XLA
  leaves free, instead of after the first steps. ``join`` it before the first evaluation; a
  failure is only logged (the evaluation then compiles as usual).

  ``start``: the thread waits for it before tracing anything (the training step's
  ``CachedStep.lowered``: tracing needs Python's lock, XLA's compilation does not).

  For runs on one device of one process: two programs in flight at once cannot then wait on
  each other's collectives."""

  def copy(x: Any) -> Any:
    return jax.device_put(x, x.sharding, may_alias=False)

  variables = {"params": state.averaged_params, "batch_stats": state.batch_stats}
  variables = jax.tree.map(copy, variables)
  jax.block_until_ready(variables)  # copied before the caller donates the originals

  def run() -> None:
    if start is not None:
      start.wait()
    try:
      for evaluator in evaluators:
        evaluator.run(config.model, config.image_size, variables, frozen, max_items=1)
    except Exception as error:  # the real evaluation reports it, if it is real
      logging.warning("compiling the evaluations ahead failed: %s", error)

  thread = threading.Thread(target=run, name="compile-evaluations", daemon=True)
  thread.start()
  return thread
