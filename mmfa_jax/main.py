"""Training entry point: ``python -m mmfa_jax.main --config=configs/vox.py --workdir=DIR``.

Any config field can be overridden (``--config.data.batch_size=16``). Re-running the same command
resumes from the latest checkpoint in ``--workdir``. For several processes (multi-host, or several
processes on one machine) run the same command in each, either where ``jax.distributed`` finds the
cluster by itself (Cloud TPU, Slurm, Kubernetes) or with ``--coordinator_address``,
``--num_processes`` and ``--process_id``.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from mmfa_jax.compilation_cache import enable_compilation_cache
from mmfa_jax.config_checks import config_flags_parser
from mmfa_jax.console import configure_console

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_COLLECTIVES = flags.DEFINE_enum(
  "cpu_collectives", "gloo", ["gloo", "mpi", "none"], "Collectives for multi-process CPU runs."
)
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """``jax.distributed.initialize`` when this is one of several processes (explicit flags, or a
  cluster JAX detects by itself); a single process needs nothing."""
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    if _CPU_COLLECTIVES.value != "none":
      jax.config.update("jax_cpu_collectives_implementation", _CPU_COLLECTIVES.value)
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
    )
    return
  try:
    jax.distributed.initialize()
  except (ValueError, RuntimeError):
    pass  # not in a detectable cluster: a single process


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  configure_console(logging.get_verbosity())  # libraries' INFO records with --verbosity=1
  initialize_distributed()
  enable_compilation_cache()  # MMFA_JAX_CACHE_DIR, default ~/.cache/mmfa_jax/jax
  config = _CONFIG.value
  logging.info(
    "process %d of %d, %d local / %d global devices (%s)",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
    jax.devices()[0].platform,
  )
  if config.get("task") == "pose_network":  # configs/synthetic_pose.py: minutes, no data set
    from mmfa_jax.pose_train import train_pose_network

    train_pose_network(config, _WORKDIR.value)
    return
  if config.get("task") == "landmarks":  # configs/synthetic_landmarks.py: minutes, no data set
    from mmfa_jax.landmark_train import train_landmark_network

    train_landmark_network(config, _WORKDIR.value)
    return
  from mmfa_jax.config_checks import check_counts
  from mmfa_jax.data.pipeline import make_source
  from mmfa_jax.landmark_train import pretrain_landmark_network
  from mmfa_jax.pose_train import pretrain_pose_network
  from mmfa_jax.train import Trainer
  from mmfa_jax.train_loop import train_and_evaluate

  try:  # configuration problems: a clear message and exit 2, before anything is compiled
    check_counts(config)
    make_source(config.data)
    pretrain_pose_network(config, _WORKDIR.value)  # configs/synthetic.py: its frozen pose first
    pretrain_landmark_network(config, _WORKDIR.value)  # and its frozen landmark detector
    if config.get("task", "animation") == "expression_vae":
      from mmfa_jax.vae_train import VAETrainer

      trainer = VAETrainer(config)
    else:
      trainer = Trainer(config)
  except (ValueError, FileNotFoundError) as error:  # ConvertedWeightsError is a ValueError
    logging.error("%s", error)
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
  from mmfa_jax.checkpoints import CheckpointWriteError

  try:
    train_and_evaluate(config, _WORKDIR.value, trainer=trainer)
  except CheckpointWriteError as error:  # e.g. the disk is full: what was saved before stays
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


# absl's flag parsing, a config problem reported as one ``error:`` line and exit status 2.
parse_flags = config_flags_parser(_CONFIG)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
