"""Run checkpoints (orbax): keep-last-K, resume targets, and an interrupted save never blocks resume."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfa_jax.checkpoints import TrainingCheckpoints
from mmfa_jax.train_state import TrainState


def _state(value):
  params = {"dense": {"kernel": jnp.full((3, 2), value, jnp.float32)}}
  return TrainState.create(params, {"norm": {"mean": jnp.zeros((2,))}}, optax.adam(1e-3))


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def test_keeps_last_k_and_restores(tmp_path):
  checkpoints = TrainingCheckpoints(tmp_path / "ckpt", keep=2, async_save=True)
  for step in (1, 2, 3):
    assert checkpoints.save(step, _state(float(step)), _state(-float(step)))
  assert not checkpoints.save(3, _state(0.0), _state(0.0))  # already there: not rewritten
  checkpoints.close()
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "3"]
  reopened = TrainingCheckpoints(tmp_path / "ckpt", keep=2)
  assert reopened.latest_step() == 3
  gen, disc = reopened.restore(3, _abstract(_state(0.0)), _abstract(_state(0.0)))
  np.testing.assert_array_equal(gen.params["dense"]["kernel"], np.full((3, 2), 3.0))
  np.testing.assert_array_equal(disc.params["dense"]["kernel"], np.full((3, 2), -3.0))
  reopened.close()


def test_interrupted_save_is_ignored_and_overwritten(tmp_path):
  directory = tmp_path / "ckpt"
  checkpoints = TrainingCheckpoints(directory, keep=3, async_save=False)
  checkpoints.save(2, _state(2.0), _state(-2.0))
  checkpoints.close()
  # What a writer killed in the middle of step 4 leaves: a temporary directory with part of the files.
  partial = directory / "4.orbax-checkpoint-tmp-1763800000000000"
  shutil.copytree(directory / "2", partial)
  shutil.rmtree(partial / "generator")

  reopened = TrainingCheckpoints(directory, keep=3, async_save=False)
  assert reopened.latest_step() == 2
  gen, _ = reopened.restore(2, _abstract(_state(0.0)), _abstract(_state(0.0)))
  np.testing.assert_array_equal(gen.params["dense"]["kernel"], np.full((3, 2), 2.0))
  # The run goes on and saves step 4 again, completely this time.
  assert reopened.save(4, _state(4.0), _state(-4.0))
  reopened.close()
  final = TrainingCheckpoints(directory, keep=3)
  assert final.latest_step() == 4
  gen, _ = final.restore(4, _abstract(_state(0.0)), _abstract(_state(0.0)))
  np.testing.assert_array_equal(gen.params["dense"]["kernel"], np.full((3, 2), 4.0))
  final.close()


def test_one_state_restores_without_a_target(tmp_path):
  checkpoints = TrainingCheckpoints(tmp_path / "ckpt", keep=1, async_save=False)
  checkpoints.save(5, _state(5.0), _state(-5.0))
  arrays = checkpoints.restore_arrays(5, "generator")
  np.testing.assert_array_equal(arrays["params"]["dense"]["kernel"], np.full((3, 2), 5.0))
  assert int(arrays["step"]) == 0
  gen, disc = checkpoints.restore(5, None, _abstract(_state(0.0)))
  assert gen is None
  np.testing.assert_array_equal(disc.params["dense"]["kernel"], np.full((3, 2), -5.0))
  checkpoints.close()


def test_resumed_runs_log_each_step_once(tmp_path):
  """A run killed after logging step 4 but before checkpointing it goes on from step 2: the
  records after step 2 (and a line the kill cut short) are dropped, so step 4 is logged once."""
  from mmfa_jax.metric_logs import MetricWriter, read_metrics

  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 2, "loss": 1.0}\n{"step": 4, "loss": 0.5}\n{"step": 6, "lo')
  assert [r["step"] for r in read_metrics(str(tmp_path))] == [2, 4]  # the cut line left out
  writer = MetricWriter(str(tmp_path), resumed_step=2)
  writer.write(4, {"loss": 0.25})
  writer.close()
  assert read_metrics(str(tmp_path)) == [{"step": 2, "loss": 1.0}, {"step": 4, "loss": 0.25}]
  path.write_text('{"step": 2}\nnot json\n{"step": 4}\n')
  with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2 is not a JSON record"):
    read_metrics(str(tmp_path))


_DISK_FULL = """
import resource, signal, sys
import jax.numpy as jnp, numpy as np, optax
from mmfa_jax.checkpoints import CheckpointWriteError, TrainingCheckpoints
from mmfa_jax.train_state import TrainState

def state(seed):  # 1 MiB of random floats (incompressible)
  kernel = np.random.default_rng(seed).normal(size=(512, 512)).astype(np.float32)
  return TrainState.create({"dense": {"kernel": jnp.asarray(kernel)}}, {}, optax.adam(1e-3))

checkpoints = TrainingCheckpoints(sys.argv[1], keep=3, async_save=sys.argv[2] == "async")
checkpoints.save(2, state(2), state(3))
checkpoints.wait()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # no room for another step
try:
  checkpoints.save(4, state(4), state(5))
  checkpoints.close()
except CheckpointWriteError as error:
  print(error)
  sys.exit(3)
"""


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_full_disk_fails_the_save_and_keeps_the_previous_checkpoint(tmp_path, mode):
  import subprocess
  import sys

  from tool_runner import ROOT

  directory = tmp_path / "ckpt"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-c", _DISK_FULL, str(directory), mode],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip
  assert run.returncode == 3, run.stderr[-2000:]
  assert f"{directory}: writing a checkpoint failed (" in run.stdout
  assert "File too large" in run.stdout and "(step 2) is intact" in run.stdout
  reopened = TrainingCheckpoints(directory, keep=3, async_save=False)
  try:
    assert reopened.latest_step() == 2
    target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
      TrainState.create({"dense": {"kernel": jnp.zeros((512, 512))}}, {}, optax.adam(1e-3)),
    )
    generator, _ = reopened.restore(2, target, target)
  finally:
    reopened.close()
  want = np.random.default_rng(2).normal(size=(512, 512)).astype(np.float32)
  np.testing.assert_array_equal(generator.params["dense"]["kernel"], want)
