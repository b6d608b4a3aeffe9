"""The training loop: ``train_and_evaluate(config, workdir)`` drives a ``StepRunner``
(``train.Trainer``, ``vae_train.VAETrainer``) with orbax checkpoints (both states and the data
iterator, resumed automatically), JSONL / TensorBoard metrics, the evaluations of
``config.evals``, PNG sample grids and a progress bar.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from mmfa_jax.compilation_cache import CompileCounter
from mmfa_jax.evaluators import compile_ahead, run_due
from mmfa_jax.metric_logs import MetricWindow, MetricWriter
from mmfa_jax.sharding import put_replicated
from mmfa_jax.train import StepRunner, Trainer
from mmfa_jax.train_state import TrainState, current_opt_state, legacy_opt_state


def make_train_iterator(config: ml_collections.ConfigDict, seed: int) -> Any:
  """This process's batch iterator (checkpointable grain iterator) for ``config.data``."""
  from mmfa_jax.data.pipeline import make_source, train_dataset

  data = config.data
  dataset = train_dataset(
    make_source(data),
    image_size=config.image_size,
    batch_size=data.batch_size,
    seed=seed,
    augment=data.augment,
    worker_count=data.get("worker_count", 0),
    read_threads=data.get("read_threads", 16),
    prefetch=data.get("prefetch", 500),
  )
  return iter(dataset)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """``WORKDIR/config.json`` (what the run was, for animation and for people)."""
  from mmfa_jax.atomic import write_atomically

  path = os.path.join(workdir, "config.json")
  write_atomically(path, config.to_json_best_effort(indent=2, sort_keys=True))


def _startup_facts(compiles: Any) -> dict[str, float]:
  """How the run started (logged with its first record): seconds from process start to the end of
  the first step and what XLA compiled or loaded from the cache until then."""
  from mmfa_jax.compilation_cache import seconds_since_process_start

  compiles.stop()
  facts = dict(
    startup_seconds=seconds_since_process_start() or float("nan"),
    compiled_programs=compiles.compiled,
    compile_seconds=compiles.compile_seconds,
    cached_programs=compiles.loaded,
    cache_load_seconds=compiles.load_seconds,
  )
  logging.info(
    "first step finished %.1f s after the process started; %s",
    facts["startup_seconds"],
    compiles.summary(),
  )
  return facts


# The optimized step compiles in about 1.6x the quick one's time (beside training, on the same
# cores) and runs about 1.5x faster (README job, 2-core CPU): it pays back when the steps left
# would take the quick program at least this many times the quick compilation's seconds.
OPTIMIZE_PAYBACK = 5.0


def _optimize_if_it_pays(trainer: StepRunner, step_seconds: float, steps_left: int) -> None:
  """Starts the optimized step's compilation (tiered compilation, ``traced_steps``) when the run
  has enough steps left; ``step_seconds``: one step of the quick program."""
  compiled = trainer.compiled_step
  if compiled.tier != "quick":
    return
  if steps_left * step_seconds >= OPTIMIZE_PAYBACK * compiled.quick_compile_seconds:
    compiled.optimize_in_background()
    logging.info("compiling the optimized training step beside training (%d steps left, %.2f s "
                 "each quick)", steps_left, step_seconds)  # fmt: skip


def _first_states(trainer: StepRunner, checkpoints: Any, iterator: Any) -> tuple[Any, Any, int]:
  """``(generator, discriminator, step)``: restored from the latest checkpoint (the data
  iterator too) or initial."""
  latest = checkpoints.latest_step()
  if latest is None:
    return (*trainer.init_states(), 0)
  generator, discriminator = restore_states(
    checkpoints, latest, trainer.abstract_states(), iterator
  )
  logging.info("resumed from %s at step %d", checkpoints.directory, int(generator.step))
  return generator, discriminator, int(generator.step)


def restore_states(
  checkpoints: Any, step: int, targets: tuple[TrainState, TrainState], iterator: Any = None
) -> tuple[TrainState, TrainState]:
  """``checkpoints.restore`` of ``(generator, discriminator)`` onto abstract ``targets``. Also read:
  a run saved with the earlier optimizer-state layout (``train_state.legacy_opt_state``), converted;
  a run saved without a parameter average resumed with ``optim.ema_decay`` > 0, whose average
  starts from the restored parameters."""
  try:
    return checkpoints.restore(step, *targets, iterator)
  except Exception as error:  # orbax reports a tree mismatch with several exception types
    first_error = error
  without_average = [t.replace(ema_params=None) for t in targets]
  for legacy in (False, True):
    attempt = [
      t.replace(opt_state=legacy_opt_state(t.opt_state)) if legacy else t for t in without_average
    ]
    if not legacy and all(t.ema_params is None for t in targets):
      continue  # the same targets as the first try
    try:
      restored = checkpoints.restore(step, *attempt, iterator)
    except Exception:
      continue
    if legacy:
      logging.info("step %d: optimizer state converted from the earlier layout", step)
      restored = [t.replace(opt_state=current_opt_state(t.opt_state)) for t in restored]
    return tuple(_with_average(r, t) for r, t in zip(restored, targets))
  raise first_error


def _with_average(restored: TrainState, target: TrainState) -> TrainState:
  """``restored`` with a parameter average starting at its parameters when ``target`` keeps one."""
  if target.ema_params is None:
    return restored
  logging.info("no parameter average in the checkpoint: it starts from the restored parameters")
  return restored.restart_average()


def _evaluate(
  trainer: StepRunner,
  generator: TrainState,
  step: int,
  end: int,
  writer: Any,
  ahead: Any,
  samples_dir: str,
) -> None:
  """Runs the evaluators due at ``step`` (``evaluators.run_due``; their grids go to
  ``samples_dir``) and writes their values, once ``ahead`` (``_compile_evaluations_ahead``'s
  thread, or None) has compiled them."""
  if ahead is not None:
    ahead.join()
  scalars = run_due(
    trainer.evaluators, trainer.config, generator, trainer.frozen, step, end, samples_dir
  )
  if scalars:
    writer.write(step, scalars)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in sorted(scalars.items()))
    logging.info("step %d: %s", step, shown)


def _compile_evaluations_ahead(
  trainer: StepRunner, generator: TrainState, step: int, end: int
) -> Any:
  """``evaluators.compile_ahead``'s thread, or None: no evaluations, nothing left to train, or a
  run of several devices or processes."""
  if not trainer.evaluators or step >= end or trainer.mesh.size > 1 or jax.process_count() > 1:
    return None
  return compile_ahead(
    trainer.evaluators, trainer.config, generator, trainer.frozen, trainer.compiled_step.lowered
  )


def _save_sample_grid(
  trainer: StepRunner,
  outputs: Any,
  local_batch: Mapping[str, np.ndarray],
  directory: str,
  step: int,
) -> None:
  """``DIRECTORY/step_NNNNNNN.png`` from this step's outputs (process 0 writes it)."""
  from mmfa_jax.visualize import save_png

  grid = trainer.sample_grid(outputs, local_batch)
  if jax.process_index() == 0 and grid is not None:
    save_png(os.path.join(directory, f"step_{step:07d}.png"), grid)


def _progress_bar(step: int, end: int) -> Any:
  from tqdm import tqdm

  return tqdm(total=end, initial=step, desc="train", unit="step", dynamic_ncols=True)


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  trainer: StepRunner | None = None,
) -> tuple[TrainState, TrainState]:
  """Trains ``config`` in ``workdir``, resuming from its latest checkpoint; returns the states.

  Writes ``checkpoints/``, ``metrics.jsonl`` (every ``train.log_every`` steps; ``config.evals``'
  ``eval/*`` values when due), ``samples/*.png``, ``config.json``. The first record of each run
  also holds its start-up facts (``startup_seconds``, ``compiled_programs``, ``compile_seconds``...).
  """
  from mmfa_jax.checkpoints import TrainingCheckpoints

  compiles = CompileCounter().start()
  train = config.train
  workdir = os.path.abspath(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    save_config(config, workdir)
  trainer = trainer or Trainer(config)
  checkpoints = TrainingCheckpoints(
    os.path.join(workdir, "checkpoints"), train.keep_checkpoints, train.async_checkpoints
  )
  iterator = make_train_iterator(config, train.seed)
  generator, discriminator, step = _first_states(trainer, checkpoints, iterator)
  key = put_replicated(jax.random.key(train.seed + 1), trainer.mesh)
  end = min(train.num_steps, step + (train.get("stop_after_steps") or train.num_steps))
  writer = MetricWriter(workdir, enabled=is_main, resumed_step=step)
  progress = _progress_bar(step, end) if is_main and train.progress_bar and step < end else None
  window, startup = MetricWindow(), None  # start-up facts: logged with the first record
  ahead = _compile_evaluations_ahead(trainer, generator, step, end)
  first = step
  try:
    while step < end:
      local = next(iterator)
      batch = trainer.global_batch(local)
      started = time.perf_counter()
      generator, discriminator, metrics, outputs = trainer.step(
        generator, discriminator, batch, key
      )
      window.add(metrics)
      step += 1
      if startup is None:
        jax.block_until_ready(metrics)
        startup = _startup_facts(compiles)
      elif step == first + 2:  # the first step to time alone: decide on the optimized program
        jax.block_until_ready(metrics)
        _optimize_if_it_pays(trainer, time.perf_counter() - started, end - step)
      if progress is not None:
        progress.update(1)
      if step % train.log_every == 0 or step == end:
        scalars = window.scalars(config.data.batch_size, trainer.learning_rates(step - 1))
        scalars.update(startup)
        startup = {}
        writer.write(step, scalars)
        if progress is not None:
          progress.set_postfix(loss=f"{scalars[trainer.progress_metric]:.3f}")
      if trainer.evaluators:
        _evaluate(trainer, generator, step, end, writer, ahead, os.path.join(workdir, "samples"))
      if train.sample_every and (step % train.sample_every == 0 or step == end):
        _save_sample_grid(trainer, outputs, local, os.path.join(workdir, "samples"), step)
      if step % train.checkpoint_every == 0 or step == end:
        checkpoints.save(step, generator, discriminator, iterator)
  finally:
    _close_run(trainer, ahead, compiles if startup is None else None, checkpoints, writer, progress)
  return generator, discriminator


def _close_run(
  trainer: StepRunner, ahead: Any, compiles: Any, checkpoints: Any, writer: Any, progress: Any
) -> None:
  """The end of ``train_and_evaluate``, also after a failure: threads joined (the evaluations'
  compile-ahead, the optimized step's compilation), then the counter (when it still runs), the
  checkpoints (waiting for an asynchronous save), the metrics and the progress bar closed."""
  if ahead is not None:
    trainer.compiled_step.lowered.set()  # a loop that failed before its first step
    ahead.join()
  trainer.compiled_step.finish_optimizing()
  if compiles is not None:
    compiles.stop()
  checkpoints.close()
  writer.close()
  if progress is not None:
    progress.close()
