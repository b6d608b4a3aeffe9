"""Training loop on the tiny synthetic config: logs, samples, checkpoints, exact resume."""

import json
import os

import jax
import numpy as np
import pytest

from configs import synthetic
from mmfa_jax.train import Trainer, make_mesh, read_metrics, required_pretrained, train_and_evaluate


def _config(num_steps):
  config = synthetic.get_config("tiny")
  config.train.update(
    dict(
      num_steps=num_steps,
      log_every=2,
      sample_every=4,
      checkpoint_every=2,
      async_checkpoints=False,
      progress_bar=False,
    )
  )
  return config


def test_synthetic_config_needs_no_pretrained_networks():
  assert required_pretrained(synthetic.get_config()) == ()
  with pytest.raises(ValueError, match="small' or 'tiny"):
    synthetic.get_config("huge")


@pytest.mark.slow
def test_train_resume_equals_uninterrupted_run(tmp_path):
  config = _config(num_steps=4)
  trainer = Trainer(config, mesh=make_mesh(1), frozen={})
  straight, _ = train_and_evaluate(config, str(tmp_path / "straight"), trainer=trainer)

  config.train.stop_after_steps = 2
  first, _ = train_and_evaluate(config, str(tmp_path / "resumed"), trainer=trainer)
  assert int(first.step) == 2
  config.train.stop_after_steps = None
  resumed, _ = train_and_evaluate(config, str(tmp_path / "resumed"), trainer=trainer)
  assert int(resumed.step) == int(straight.step) == 4
  for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
  # Parameters moved away from step 2.
  moved = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(resumed.params))
  )
  assert moved > 1e-6

  workdir = tmp_path / "straight"
  records = read_metrics(str(workdir))
  assert [r["step"] for r in records] == [2, 4]
  # decay_at 0.8 of 4 steps: x0.1 from step index 3 on (the record of step 4 logs index 3)
  assert [r["learning_rate"] for r in records] == pytest.approx([5e-4, 5e-5])
  for record in records:
    for key in ("generator_loss", "perceptual", "equivariance", "identity", "representation"):
      assert np.isfinite(record[key])
    assert record["total_generator_skipped"] == 0
    assert record["images_per_second"] > 0
  assert sorted(os.listdir(workdir / "samples")) == ["step_0000004.png"]
  from PIL import Image

  grid = np.asarray(Image.open(workdir / "samples" / "step_0000004.png"))
  # rows: min(4, batch 4); columns: source, driving, 3 generated sizes, occlusion (66 px cells)
  assert grid.shape == (4 * 66, 6 * 66, 3)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]  # keep_checkpoints=2
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model"]["pose_network"] == "learned"


def _main(*args):
  import subprocess
  import sys

  from tool_runner import ROOT

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", "mmfa_jax.main", *args],
    capture_output=True,
    text=True,
    env=env,
    cwd=ROOT,
    timeout=300,
  )


def test_main_reports_configuration_problems_with_exit_2(tmp_path):
  workdir = tmp_path / "run"
  no_data = _main("--config=configs/vox.py", f"--workdir={workdir}")
  assert no_data.returncode == 2
  assert "config.data.root is not set" in no_data.stderr
  no_weights = _main(
    "--config=configs/vox.py", f"--workdir={workdir}", "--config.data.source=synthetic"
  )
  assert no_weights.returncode == 2
  for kind in ("hopenet", "vgg19", "vggface"):
    assert f"config.pretrained.{kind} is not set" in no_weights.stderr
  assert "Traceback" not in no_weights.stderr
  assert not workdir.exists()
