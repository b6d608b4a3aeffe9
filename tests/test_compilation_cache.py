"""The compilation caches the commands turn on: where they live, ``none``, and a second process (a
resumed training run included) loading what the first compiled."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from tool_runner import ROOT

from mmfa_jax import compilation_cache
from mmfa_jax.metric_logs import read_metrics


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv("MMFA_JAX_CACHE_DIR", raising=False)
  monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert compilation_cache.cache_directory() == str(tmp_path / "home/.cache/mmfa_jax/jax")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compilation_cache.cache_directory() == str(tmp_path / "xdg/mmfa_jax/jax")
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", "relative/dir")
  assert compilation_cache.cache_directory() == os.path.abspath("relative/dir")
  for off in ("none", "None", "NONE", ""):
    monkeypatch.setenv("MMFA_JAX_CACHE_DIR", off)
    assert compilation_cache.cache_directory() is None


def test_none_leaves_jax_settings_alone(monkeypatch):
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", "none")
  before = jax.config.jax_compilation_cache_dir
  assert compilation_cache.enable_compilation_cache() is None
  assert jax.config.jax_compilation_cache_dir == before


def test_unusable_directory_costs_only_the_cache(monkeypatch, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  monkeypatch.setenv("MMFA_JAX_CACHE_DIR", str(blocker / "cache"))
  before = jax.config.jax_compilation_cache_dir
  assert compilation_cache.enable_compilation_cache() is None
  assert jax.config.jax_compilation_cache_dir == before


_SCRIPT = textwrap.dedent(
  """
  import json
  import jax
  import numpy as np
  jax.config.update("jax_platforms", "cpu")
  from mmfa_jax.compilation_cache import CompileCounter, enable_compilation_cache
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.ops.layers import Conv
  directory = enable_compilation_cache()
  module = Conv(8, (3, 3), padding=1)
  x = np.ones((2, 16, 16, 4), np.float32)
  variables = init_variables(module, 0, x)
  with CompileCounter() as counter:
    out = jax.jit(module.apply)(variables, x)
    jax.block_until_ready(out)
  print(json.dumps(dict(
    directory=directory, compiled=counter.compiled, loaded=counter.loaded,
    xla_caches=jax.config.jax_persistent_cache_enable_xla_caches,
    checksum=float(np.asarray(out).sum()),
  )))
  """
)


def _run_script(env):
  result = subprocess.run(
    [sys.executable, "-c", _SCRIPT],
    capture_output=True,
    text=True,
    env=dict(os.environ, PYTHONPATH=ROOT, **env),
    cwd=ROOT,
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_process_loads_what_the_first_compiled(tmp_path):
  cache = tmp_path / "cache"
  first = _run_script({"MMFA_JAX_CACHE_DIR": str(cache)})
  assert first["directory"] == str(cache)
  assert first["compiled"] >= 1 and first["loaded"] == 0
  assert first["xla_caches"] == "xla_gpu_per_fusion_autotune_cache_dir"
  assert any(name.startswith("jit_apply") for name in os.listdir(cache))
  second = _run_script({"MMFA_JAX_CACHE_DIR": str(cache)})
  assert second["compiled"] == 0 and second["loaded"] >= 1
  assert second["checksum"] == first["checksum"]
  # Turned off: compiled again, nothing read.
  off = _run_script({"MMFA_JAX_CACHE_DIR": "none"})
  assert off["directory"] is None and off["compiled"] >= 1 and off["loaded"] == 0


def test_default_directory_is_under_the_home_cache(tmp_path):
  env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": ""}
  result = subprocess.run(
    [sys.executable, "-c", _SCRIPT],
    capture_output=True,
    text=True,
    env={k: v for k, v in dict(os.environ, PYTHONPATH=ROOT, **env).items() if k not in
         ("MMFA_JAX_CACHE_DIR", "XDG_CACHE_HOME")},
    cwd=ROOT,
    timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])["directory"] == str(
    tmp_path / ".cache/mmfa_jax/jax"
  )
  assert os.listdir(tmp_path / ".cache/mmfa_jax/jax")


@pytest.mark.slow
def test_resumed_training_run_compiles_nothing_new(tmp_path):
  """``python -m mmfa_jax.main`` stopped after one step, then resumed for the second in the same
  workdir: the second process loads every program from the cache (its first metrics record says
  so) and reads its traced step instead of tracing it. The config stays the same (``num_steps`` is part of the step: its learning-rate schedule)."""
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env["MMFA_JAX_CACHE_DIR"] = str(tmp_path / "cache")
  base = [
    sys.executable,
    "-m",
    "mmfa_jax.main",
    "--config=configs/synthetic.py:tiny",
    f"--workdir={workdir}",
    "--config.train.log_every=1",
    "--config.train.sample_every=1",
    "--config.train.progress_bar=False",
    "--config.train.num_steps=2",
  ]
  for stop in ("--config.train.stop_after_steps=1", "--config.train.stop_after_steps=0"):
    result = subprocess.run(
      [*base, stop],
      capture_output=True,
      text=True,
      env=env,
      cwd=ROOT,
      timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
  first, resumed = read_metrics(str(workdir))
  assert (first["step"], resumed["step"]) == (1, 2)
  assert first["compiled_programs"] >= 1 and first["cached_programs"] == 0
  assert resumed["compiled_programs"] == 0, resumed
  assert resumed["cached_programs"] >= 1
  assert 0 < resumed["startup_seconds"] < first["startup_seconds"]
  assert "loaded from the compilation cache" in result.stderr
  # Nor traced again (traced_steps: stop_after_steps only steers the loop).
  assert "traced training step read from" in result.stderr
  assert sorted(os.listdir(workdir / "samples")) == ["step_0000001.png", "step_0000002.png"]


def test_metric_writer_imports_torch_only_for_an_installed_tensorboard(tmp_path):
  """Start-up: without the ``tensorboard`` package, the writer does not import torch (1.5-2.3 s)."""
  script = textwrap.dedent(
    f"""
    import importlib.util, json, sys
    from mmfa_jax import metric_logs
    before = "torch" in sys.modules
    writer = metric_logs.MetricWriter({str(tmp_path / "run")!r})
    writer.write(3, {{"loss": 0.5}})
    print(json.dumps({{"before": before, "after": "torch" in sys.modules,
                      "tensorboard": writer._tensorboard is not None,
                      "installed": importlib.util.find_spec("tensorboard") is not None
                        or importlib.util.find_spec("tensorboardX") is not None}}))
    """
  )
  result = subprocess.run(
    [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
  )
  assert result.returncode == 0, result.stderr[-2000:]
  facts = json.loads(result.stdout.strip().splitlines()[-1])
  assert facts["before"] is False
  assert facts["tensorboard"] is facts["installed"]
  if not facts["installed"]:
    assert facts["after"] is False
  assert read_metrics(str(tmp_path / "run")) == [{"step": 3, "loss": 0.5}]


def test_summary_writer_choice(monkeypatch):
  import importlib.util

  from mmfa_jax import metric_logs

  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util,
    "find_spec",
    lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a),
  )
  assert metric_logs._summary_writer_class() is None
