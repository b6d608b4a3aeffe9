"""Training loop on the tiny synthetic config: logs, samples, checkpoints, exact resume."""

import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import synthetic
from mmfa_jax.metric_logs import read_metrics
from mmfa_jax.objective import Objective, required_pretrained
from mmfa_jax.sharding import make_mesh
from mmfa_jax.train import Trainer
from mmfa_jax.train_loop import train_and_evaluate

STEPS = 4
# Overrides shared by every run of this module (in-process and command line), so that the runs
# on one device, on eight devices and in two processes do exactly the same steps.
OVERRIDES = dict(
  data=dict(batch_size=8),
  optim=dict(ema_decay=0.9),  # the parameter average is saved, resumed and loaded with the rest
  train=dict(
    num_steps=STEPS,
    log_every=2,
    sample_every=4,
    checkpoint_every=2,
    async_checkpoints=False,
    progress_bar=False,
  ),
)


def _config(**train):
  config = synthetic.get_config("tiny")
  config.data.update(OVERRIDES["data"])
  config.optim.update(OVERRIDES["optim"])
  config.train.update(OVERRIDES["train"])
  config.train.update(train)
  return config


def _params(state):
  """Parameter leaves of a TrainState or of a restored ``{"params": ...}`` dict, as numpy."""
  params = state["params"] if isinstance(state, dict) else state.params
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))]


def _max_difference(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.fixture(scope="module", autouse=True)
def no_persistent_cache_writes():
  """This module writes nothing to the session's persistent compilation cache.

  Its trainers are shared in memory, and its other runs are subprocesses, so it never reads its own
  entries back. Writing them also crashed: in two full CI runs (2026-11-23) XLA's CPU
  ``executable.serialize()`` segfaulted or aborted while caching the 8-device step of
  ``first_step``. A subset run (test_commands + that test) did not reproduce it. A compile time
  threshold no compilation reaches turns the writes off; reads stay on.
  """
  previous = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
  yield
  jax.config.update("jax_persistent_cache_min_compile_time_secs", previous)


@pytest.fixture(scope="module")
def one_device_trainer():
  """The 1-device trainer of this module's config, shared so that its step compiles once (a
  resumed run reads its states from disk; which compiled step runs them does not matter)."""
  return Trainer(_config(), mesh=make_mesh(1), frozen={})


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory, one_device_trainer):
  """The uninterrupted 4-step run on one device: (workdir, generator, discriminator params)."""
  workdir = tmp_path_factory.mktemp("train") / "one_device"
  generator, discriminator = train_and_evaluate(_config(), str(workdir), trainer=one_device_trainer)
  return workdir, _params(generator), _params(discriminator)


def test_synthetic_config_needs_no_converted_weights():
  small = synthetic.get_config()  # its frozen pose network is pretrained by the command itself
  assert required_pretrained(small) == ("hopenet",) and small.pose_pretraining.num_steps > 0
  assert required_pretrained(synthetic.get_config("tiny")) == ()  # the tests' size: pose learned
  with pytest.raises(ValueError, match="'small', 'bench' or 'tiny'"):
    synthetic.get_config("huge")


@pytest.mark.slow
def test_train_resume_equals_uninterrupted_run(tmp_path, one_device_run, one_device_trainer):
  workdir, straight, _ = one_device_run
  config = _config(stop_after_steps=2)
  trainer = one_device_trainer
  first, _ = train_and_evaluate(config, str(tmp_path / "resumed"), trainer=trainer)
  assert int(first.step) == 2
  config.train.stop_after_steps = None
  from mmfa_jax.compilation_cache import CompileCounter

  with CompileCounter() as compiles:  # restored states: the trainer's step, not a new one
    resumed, _ = train_and_evaluate(config, str(tmp_path / "resumed"), trainer=trainer)
  assert compiles.compile_seconds < 10, compiles.summary()  # the step alone compiles for 70 s
  assert int(resumed.step) == STEPS
  resumed = _params(resumed)
  for a, b in zip(straight, resumed):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  assert _max_difference(_params(first), resumed) > 1e-6  # parameters moved after step 2
  # The parameter average (optim.ema_decay) is resumed too, and inference loads it by default.
  from mmfa_jax.checkpoints import load_training_run

  averages = [_params(load_training_run(str(w))[1]) for w in (workdir, tmp_path / "resumed")]
  for a, b in zip(*averages):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  _, last, _ = load_training_run(str(workdir), averaged=False)
  for a, b in zip(straight, _params(last)):
    np.testing.assert_array_equal(a, b)
  assert _max_difference(averages[0], straight) > 1e-5  # 4 steps of decay <= 0.31 lag behind

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
  # rows: min(4, batch 8); columns: source, driving, 3 generated sizes, occlusion (66 px cells)
  assert grid.shape == (4 * 66, 6 * 66, 3)
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]  # keep_checkpoints=2
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["model"]["pose_network"] == "learned"


def test_states_share_one_structure_and_one_compiled_step(one_device_trainer):
  """``tx`` is a static field of the train states: every state of a trainer (fresh, another seed,
  the restore targets) holds the same optimizer object, so one compiled step runs them all."""
  fresh, other_seed = one_device_trainer.init_states(), one_device_trainer.init_states(seed=5)
  restore_target = one_device_trainer.abstract_states()
  assert jax.tree.structure(fresh) == jax.tree.structure(other_seed)
  assert jax.tree.structure(fresh) == jax.tree.structure(restore_target)
  assert fresh[0].tx is other_seed[0].tx is one_device_trainer.generator_tx


def test_the_optimized_step_compiles_when_it_pays_back():
  """Tiered compilation (``traced_steps``): 'auto' is on for the CPU; the loop starts the optimized
  compilation only when the steps left would take the quick program ``OPTIMIZE_PAYBACK`` times the
  quick compilation's seconds."""
  from types import SimpleNamespace

  from mmfa_jax.train import tiered_compilation
  from mmfa_jax.train_loop import OPTIMIZE_PAYBACK, _optimize_if_it_pays

  config = _config()
  assert tiered_compilation(config)  # the tests run on the CPU
  config.train.tiered_compilation = "off"
  assert not tiered_compilation(config)
  config.train.tiered_compilation = "on"
  assert tiered_compilation(config)

  class Step:
    tier, quick_compile_seconds, started = "quick", 30.0, 0

    def optimize_in_background(self):
      self.started += 1

  step = Step()
  trainer = SimpleNamespace(compiled_step=step)
  steps_to_pay_back = int(OPTIMIZE_PAYBACK * 30.0 / 2.0)  # at 2 s per quick step
  _optimize_if_it_pays(trainer, 2.0, steps_to_pay_back - 1)
  assert step.started == 0
  _optimize_if_it_pays(trainer, 2.0, steps_to_pay_back)
  assert step.started == 1
  step.tier = "jit"  # not tiered (another platform, several processes, 'off')
  _optimize_if_it_pays(trainer, 2.0, 10**6)
  assert step.started == 1


@pytest.fixture(scope="module")
def first_step(one_device_trainer):
  """Step 1 of the run (``init_states``, key ``seed + 1``, the first batch of the iterator) on a
  1-device and on an 8-device mesh: ``{devices: (metrics, generator params, discriminator params)}``.
  """
  from mmfa_jax.sharding import replicated
  from mmfa_jax.train_loop import make_train_iterator

  config = _config()
  local = next(make_train_iterator(config, config.train.seed))
  results = {}
  for devices in (1, 8):
    if devices == 1:
      trainer = one_device_trainer
    else:
      trainer = Trainer(config, mesh=make_mesh(devices), frozen={})
    generator, discriminator = trainer.init_states()
    key = jax.device_put(jax.random.key(config.train.seed + 1), replicated(trainer.mesh))
    generator, discriminator, metrics, _ = trainer.step(
      generator, discriminator, trainer.global_batch(local), key
    )
    leaf = jax.tree.leaves(generator.params)[0]
    assert len(leaf.sharding.device_set) == devices
    results[devices] = (jax.device_get(metrics), _params(generator), _params(discriminator))
  return results


OPTIM_LEARNING_RATE = synthetic.get_config("tiny").optim.learning_rate
LOSSES = (
  "generator_loss",
  "perceptual",
  "equivariance",
  "feature_matching",
  "discriminator_gan",
  "mask_background",
  "occlusion",
)


def _assert_same_step(metrics_a, params_a, metrics_b, params_b):
  """Losses to float32 reordering; parameters up to Adam's sign flips (see below)."""
  for name in LOSSES:
    assert float(metrics_b[name]) == pytest.approx(float(metrics_a[name]), rel=1e-4), name
  learning_rate = OPTIM_LEARNING_RATE
  for one, other in zip(params_a, params_b):
    difference = np.concatenate([np.ravel(np.abs(a - b)) for a, b in zip(one, other)])
    assert np.mean(difference > 1e-5) < 0.02
    assert difference.max() <= 2 * learning_rate + 1e-6


@pytest.mark.slow
def test_one_step_on_eight_devices_matches_one_device(first_step):
  """The same step from the same states and batch on a 1-device and an 8-device mesh.

  Losses agree to float32 reordering (measured: relative 1.6e-5 at most). Parameters: Adam's first
  update is about lr * sign(gradient), so a parameter whose gradient is ~0 can move by +lr on one
  mesh and -lr on the other when the reordered sums flip its sign. Measured: 0.75 % of the
  generator's parameters differ by more than 1e-5, the largest by 1e-3 = 2 lr. Over more steps
  these flips spread through the model, so the comparison is of one step.
  """
  (metrics_1, gen_1, disc_1), (metrics_8, gen_8, disc_8) = first_step[1], first_step[8]
  _assert_same_step(metrics_1, (gen_1, disc_1), metrics_8, (gen_8, disc_8))


@pytest.mark.slow
def test_motion_usage_reads_the_background_slot_and_the_occlusion_map(first_step):
  """``mask_background`` is the mean of mask slot 0; at step 1 (initial weights) the dense motion's
  softmax is close to uniform over the K + 1 slots, and the occlusion map close to its sigmoid's
  middle."""
  from mmfa_jax.train import motion_usage

  mask = np.zeros((2, 1, 2, 2, 4), np.float32)
  mask[..., 0] = [[[0.5, 1.0], [0.0, 0.25]]]
  mask[..., 1] = 1 - mask[..., 0]
  occlusion = np.full((2, 2, 2, 1), 0.2, np.float32)
  usage = motion_usage({"mask": jnp.asarray(mask), "occlusion_map": jnp.asarray(occlusion)})
  assert float(usage["mask_background"]) == pytest.approx(0.4375)
  assert float(usage["occlusion"]) == pytest.approx(0.2)
  assert set(motion_usage({"mask": jnp.asarray(mask), "occlusion_map": None})) == {
    "mask_background"
  }
  metrics = first_step[1][0]
  num_slots = _config().model.num_kp + 1
  assert abs(float(metrics["mask_background"]) - 1 / num_slots) < 0.1
  assert 0.2 < float(metrics["occlusion"]) < 0.8


def _main(*args, devices=None, wait=True, cache="none"):
  import subprocess
  import sys

  from tool_runner import ROOT

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", MMFA_JAX_CACHE_DIR=cache)
  if devices is not None:
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
  command = [sys.executable, "-m", "mmfa_jax.main", *args]
  if not wait:
    return subprocess.Popen(
      command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
  return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def _flags(config_name, section):
  return [f"--config.{config_name}.{k}={v}" for k, v in section.items()]


@pytest.mark.slow
def test_two_processes_train_together_like_one_process(tmp_path, first_step):
  """Two ``main`` processes on this machine (``jax.distributed`` over loopback, gloo CPU
  collectives), 4 devices each, do step 1 of the run together: the same step as one process with 8
  devices (measured: losses within 1.5e-5 relative; 0.9 % of the generator's parameters differ by
  more than 1e-5, the largest by 2 lr, as between 1 and 8 devices in one process)."""
  import socket

  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  workdir = tmp_path / "two_processes"
  args = [
    "--config=configs/synthetic.py:tiny",
    f"--workdir={workdir}",
    *_flags("data", OVERRIDES["data"]),
    *_flags("optim", OVERRIDES["optim"]),
    *_flags("train", dict(OVERRIDES["train"], stop_after_steps=1, sample_every=0)),
    f"--coordinator_address=127.0.0.1:{port}",
    "--num_processes=2",
  ]
  runs = [_main(*args, f"--process_id={i}", devices=4, wait=False) for i in (0, 1)]
  outputs = []
  try:
    for run in runs:
      outputs.append(run.communicate(timeout=900))
  finally:
    for run in runs:
      run.kill()
  for run, (_, stderr) in zip(runs, outputs):
    assert run.returncode == 0, stderr[-3000:]
  assert "process 1 of 2, 4 local / 8 global devices" in outputs[1][1]

  records = read_metrics(str(workdir))  # written by process 0 only
  assert [r["step"] for r in records] == [1]
  assert not (workdir / "samples").exists()
  step_dir = workdir / "checkpoints" / "1"
  assert sorted(os.listdir(step_dir / "data")) == [
    "commit_success.txt",
    "process_0-of-2.json",
    "process_1-of-2.json",
  ]
  from mmfa_jax.checkpoints import TrainingCheckpoints

  checkpoints = TrainingCheckpoints(str(workdir / "checkpoints"), 2, async_save=False)
  try:
    saved = [
      _params(checkpoints.restore_arrays(1, side)) for side in ("generator", "discriminator")
    ]
  finally:
    checkpoints.close()
  metrics_8, gen_8, disc_8 = first_step[8]
  _assert_same_step(metrics_8, (gen_8, disc_8), records[0], tuple(saved))


@pytest.mark.slow
def test_expression_vae_trains_on_the_mmfa_run_without_collapsing(tmp_path, one_device_run):
  """``main`` with configs/vox_vae.py on the 4-step MMFA run's frozen expression encoder.

  Its features are small (spread ~0.014); without standardisation the KL term collapsed the
  posterior (measured: kl_per_dim 0.0074 -> 0.0002 over 300 steps). Standardised, 300 steps gave
  kl_per_dim ~1.0 from step 75 on, reconstruction 0.47 -> 0.028 and prior_spread 0.18 -> 0.66.
  """
  mmfa_workdir, _, _ = one_device_run
  workdir = tmp_path / "vae"
  run = _main(
    "--config=configs/vox_vae.py:synthetic",
    f"--workdir={workdir}",
    f"--config.mmfa.workdir={mmfa_workdir}",
    "--config.train.num_steps=150",
    "--config.train.log_every=25",
    "--config.train.checkpoint_every=150",
    "--config.train.async_checkpoints=False",
    "--config.train.progress_bar=False",
  )
  assert run.returncode == 0, run.stderr[-3000:]
  records = read_metrics(str(workdir))
  assert [r["step"] for r in records] == list(range(25, 151, 25))
  first, last = records[0], records[-1]
  assert last["kl_weight"] == pytest.approx(1e-3)  # annealed over the first 15 steps
  assert last["reconstruction"] < 0.3 * first["reconstruction"]
  assert min(r["kl_per_dim"] for r in records[1:]) > 0.3  # nats per latent dimension
  assert last["prior_spread"] > max(0.3, first["prior_spread"])
  assert all(r["total_generator_skipped"] == 0 for r in records)

  from mmfa_jax.checkpoints import load_training_run

  _, variables, step = load_training_run(str(workdir))
  assert step == 150
  stats = variables["batch_stats"]
  assert float(stats["feature_count"]) == 150 * 16 * 2  # steps x pairs x (source, driving)
  assert 0 < float(np.mean(np.sqrt(stats["feature_var"]))) < 1


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


def test_main_refuses_bad_command_lines_with_one_error_line(tmp_path):
  missing, broken = tmp_path / "missing.py", tmp_path / "broken config.py"
  broken.write_text("def get_config(:\n")
  tiny = "--config=configs/synthetic.py:tiny"
  cases = [  # (arguments, what the error line says)
    ([tiny, "--config.nonexistent=1"], "--config.nonexistent=1: the config has no field 'nonexistent'"),
    ([tiny, "--config.data.batch_size=abc"], "--config.data.batch_size=abc: invalid literal for int()"),
    ([tiny, "--config.data.batch_size=-2"], "config.data.batch_size=-2 must be at least 1"),
    ([tiny, "--config.train.log_every=0"], "config.train.log_every=0 must be at least 1"),
    ([tiny, "--config.train.tiered_compilation=sometimes"],
     "config.train.tiered_compilation='sometimes' must be one of auto, on, off"),
    ([tiny, "--config.model.scale_translation.translation=argmax"],
     "config.model.scale_translation.translation='argmax' must be one of pooled, heatmap"),
    ([tiny, "--config.model.scale_translation.scale=spread"],
     "config.model.scale_translation.scale='spread' must be one of pooled, heatmap"),
    ([tiny, "--config.optim.ema_decay=1.0"], "config.optim.ema_decay=1.0 must be in [0, 1)"),
    ([tiny, "--config.optim.learning_rate_multipliers=(('image_generater', 0.2),)"],
     "learning-rate multiplier prefix 'image_generater' matches no parameter"),
    ([f"--config={missing}"], f"No such file or directory: '{missing}'"),
    ([f"--config={broken}"], f"--config: {broken}, line 1: invalid syntax"),
    (["--config=configs/synthetic.py:huge"], "takes 'small', 'bench' or 'tiny'"),
    ([tiny], "Flag --workdir must have a value other than None"),
  ]  # fmt: skip
  running = []
  for index, (arguments, _) in enumerate(cases):  # in parallel: each is mostly imports
    workdir = [] if arguments == [tiny] else [f"--workdir={tmp_path / f'run{index}'}"]
    running.append(_main(*arguments, *workdir, wait=False))
  for (arguments, message), process in zip(cases, running):
    _, stderr = process.communicate(timeout=300)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert process.returncode == 2, (arguments, stderr[-2000:])
    assert len(errors) == 1 and message in errors[0], (arguments, errors)
    assert "Traceback" not in stderr, (arguments, stderr[-2000:])
  assert not any(tmp_path.glob("run*"))  # no workdir made


class _Heatmaps(nn.Module):
  """5x5 convolution to L = 5 heatmaps, then the soft-argmax of each: ``(B, H, W, 3)`` ->
  ``(B, L, 2)`` (x, y) in [-1, 1]."""

  @nn.compact
  def __call__(self, images):
    logits = nn.Conv(5, (5, 5), padding=2, name="conv")(images)  # (B, H, W, L)
    b, h, w, points = logits.shape
    probs = jax.nn.softmax(logits.reshape(b, h * w, points), axis=1).reshape(logits.shape)
    x = jnp.sum(probs * jnp.linspace(-1, 1, w)[None, None, :, None], axis=(1, 2))  # (B, L)
    y = jnp.sum(probs * jnp.linspace(-1, 1, h)[None, :, None, None], axis=(1, 2))
    return jnp.stack([x, y], axis=-1)


class _SoftArgmaxLandmarks:
  """A toy frozen landmark network (``mmfa_jax.objective.LandmarkNetwork``) around ``_Heatmaps``."""

  point_weights = np.array([2.0, 2.0, 1.0, 1.0, 0.5], np.float32)

  def __init__(self):
    self.module = _Heatmaps()

  def init(self, size):
    from mmfa_jax.initialization import init_variables

    return init_variables(self.module, 7, np.zeros((1, size, size, 3), np.float32))

  def apply(self, variables, images):
    return self.module.apply(variables, images)


def _landmarks_oracle(variables, images):
  """The toy network in PyTorch (conv2d) and numpy (soft-argmax)."""
  import torch

  kernel = np.asarray(variables["params"]["conv"]["kernel"])  # (5, 5, 3, L)
  bias = np.asarray(variables["params"]["conv"]["bias"])
  logits = torch.nn.functional.conv2d(
    torch.from_numpy(np.array(images, np.float32)).permute(0, 3, 1, 2),
    torch.from_numpy(kernel).permute(3, 2, 0, 1),
    torch.from_numpy(bias),
    padding=2,
  ).numpy()  # (B, L, H, W)
  b, points, h, w = logits.shape
  flat = logits.reshape(b, points, h * w).astype(np.float64)
  probs = np.exp(flat - flat.max(-1, keepdims=True))
  probs = (probs / probs.sum(-1, keepdims=True)).reshape(logits.shape)
  x = np.sum(probs * np.linspace(-1, 1, w)[None, None, None, :], axis=(2, 3))
  y = np.sum(probs * np.linspace(-1, 1, h)[None, None, :, None], axis=(2, 3))
  return np.stack([x, y], axis=-1)  # (B, L, 2)


# bfloat16 / float32 loss terms at the same parameters, batch and random numbers.
TOLERANCES_BF16 = dict(
  perceptual=0.05, feature_matching=0.05, identity=0.05, keypoint_prior=0.15, equivariance=0.15
)


@pytest.mark.slow
def test_bfloat16_generator_loss_with_a_landmark_network(first_step):
  """The generator side of step 1 with ``train.dtype=bfloat16`` and a frozen landmark network.

  The landmark term equals eq. 9 on the toy network's landmarks of the prediction and the driving
  frame (PyTorch/numpy oracle); the other terms stay within 5 % of the float32 step's; the
  gradients are float32 and finite.
  """
  from mmfa_jax.train_loop import make_train_iterator

  config = _config()
  config.train.dtype = "bfloat16"
  config.loss.landmark = 2.0
  detector = _SoftArgmaxLandmarks()
  frozen = {"landmarks": detector.init(config.image_size)}
  trainer = Trainer(config, mesh=make_mesh(1), frozen=frozen, landmarks=detector)
  generator, discriminator = trainer.init_states()
  batch = trainer.global_batch(next(make_train_iterator(config, config.train.seed)))
  rng = jax.random.fold_in(jax.random.key(config.train.seed + 1), 0)  # what step 1 uses
  loss_and_grads = jax.jit(jax.value_and_grad(trainer.objective.generator_loss, has_aux=True))
  (total, aux), grads = loss_and_grads(
    generator.params,
    generator.batch_stats,
    (discriminator.params, discriminator.batch_stats),
    trainer.frozen,
    batch,
    rng,
  )
  terms = jax.device_get(aux["terms"])
  prediction = np.asarray(aux["out"]["generated"]["prediction"])
  assert prediction.dtype == np.float32
  want = _landmarks_oracle(frozen["landmarks"], prediction)
  target = _landmarks_oracle(frozen["landmarks"], np.asarray(batch["driving"]))
  weights = detector.point_weights / detector.point_weights.mean()
  expected = np.mean(np.mean(np.abs(want - target), axis=(0, 2)) * weights)
  assert float(terms["landmark"]) == pytest.approx(2.0 * expected, rel=1e-4)
  assert float(terms["landmark"]) > 0

  metrics_f32 = first_step[1][0]
  ratios = {name: float(terms[name]) / float(metrics_f32[name]) for name in TOLERANCES_BF16}
  assert all(abs(ratios[k] - 1) <= TOLERANCES_BF16[k] for k in ratios), ratios
  assert float(total) == pytest.approx(sum(float(v) for v in terms.values()), rel=1e-5)
  leaves = jax.tree.leaves(grads)
  assert all(leaf.dtype == np.float32 for leaf in leaves)
  assert all(np.all(np.isfinite(np.asarray(leaf))) for leaf in leaves)


def test_batched_motion_equals_the_calls_in_order():
  """``training_forward`` batches the repeated motion-network calls; the reference is the calls one
  after another (canonical keypoints of source, warped and driving frames; motion of source,
  driving and warped frames; generator; expression latent of the augmented frame): the same
  outputs and the same BatchNorm running statistics at the end."""
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.models.animation import animation_model_from_config
  from mmfa_jax.models.variants import variant_from_config
  from mmfa_jax.objective import training_forward

  config = synthetic.get_config("tiny")  # MMFA with a learned (BatchNorm-updating) pose network
  model = animation_model_from_config(config.model)
  size = config.image_size
  rng = np.random.default_rng(0)
  source, driving, transformed, augmented = (
    rng.uniform(size=(2, size, size, 3)).astype(np.float32) for _ in range(4)
  )
  variables = init_variables(model, 0, source[:1], source[:1])
  variables = {  # away from the initialisation's zero output layers
    "params": jax.tree.map(
      lambda x: x + rng.normal(0, 0.05, x.shape).astype(np.float32), variables["params"]
    ),
    "batch_stats": variables["batch_stats"],
  }

  def in_order(variables):
    state = dict(variables)

    def call(method, *args):
      out, updated = model.apply(state, *args, method=method, mutable=["batch_stats"])
      state["batch_stats"] = updated["batch_stats"]
      return out

    estimator = lambda m: m.motion_estimator  # noqa: E731
    canonical = [
      call(lambda m, x: estimator(m).canonical_keypoints(x, True), x)
      for x in (source, transformed, driving)
    ]
    motions = [
      call(lambda m, x, c: estimator(m).frame_motion(x, c, True), x, c)
      for x, c in ((source, canonical[0]), (driving, canonical[0]), (transformed, canonical[1]))
    ]
    generated = call(
      lambda m, s, a, b: m.image_generator(s, a, b, True),
      source,
      motions[0]["kp"],
      motions[1]["kp"],
    )
    latent = call(lambda m, x: estimator(m).exp_encoder(x, True), augmented)
    return canonical, motions, generated, latent, state["batch_stats"]

  def batched(variables):
    variant = variant_from_config(config.model)
    out, stats = training_forward(
      model, variant, variables, {}, source, driving, transformed, augmented, True
    )
    motions = [out["source_motion"], out["driving_motion"], out["transformed_motion"]]
    canonical = [out["source_motion"]["canonical_kp"], None, out["driving_canonical_kp"]]
    return canonical, motions, out["generated"], out["augmented_latent"], stats

  want, got = jax.jit(in_order)(variables), jax.jit(batched)(variables)
  # Outputs agree to float32 reordering, amplified by BatchNorm over batches of two (measured: 3e-4
  # at most, 2e-3 at one pixel of the image); train-mode outputs do not read the running statistics, whose order the last check
  # compares.
  np.testing.assert_allclose(got[0][0], want[0][0], atol=1e-5)
  np.testing.assert_allclose(got[0][2], want[0][2], atol=1e-5)
  for motion_got, motion_want in zip(got[1], want[1]):
    for name in ("kp", "yaw", "scale", "expression_deformation", "expression_latent"):
      np.testing.assert_allclose(motion_got[name], motion_want[name], rtol=2e-3, atol=2e-3)
  image_difference = np.abs(got[2]["prediction"] - want[2]["prediction"])  # grid sampling: 2e-3
  assert image_difference.max() < 1e-2 and image_difference.mean() < 1e-3  # measured 1.7e-4
  np.testing.assert_allclose(got[3], want[3], rtol=2e-3, atol=2e-3)
  stats_got, stats_want = jax.tree.leaves(got[4]), jax.tree.leaves(want[4])
  assert jax.tree.structure(got[4]) == jax.tree.structure(want[4])
  for a, b in zip(stats_got, stats_want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # The pose network's statistics moved (the calls updated them), so the comparison has content.
  pose_stats = want[4]["motion_estimator"]["pose"]["bn1"]["mean"]
  assert (
    np.max(np.abs(pose_stats - variables["batch_stats"]["motion_estimator"]["pose"]["bn1"]["mean"]))
    > 1e-3
  )


def test_frozen_hopenet_is_a_step_input_never_a_trained_parameter():
  """MMFA with the pretrained Hopenet (tiny:mmfa): its variables are the step's frozen input, the
  train state holds no pose network, and the motion's angles are the frozen network's."""
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.models import Hopenet
  from mmfa_jax.models.hopenet import hopenet_head_pose
  from mmfa_jax.objective import training_forward

  config = synthetic.get_config("tiny:mmfa")
  config.loss.perceptual_features, config.loss.vggface = "pixels", 0.0  # only the Hopenet frozen
  size = config.image_size
  hopenet = Hopenet(**dict(config.model.hopenet))
  frozen = {"hopenet": init_variables(hopenet, 3, np.zeros((1, size, size, 3), np.float32))}
  trainer = Trainer(config, mesh=make_mesh(1), frozen=frozen)
  generator, _ = trainer.init_states()
  assert "pose" not in generator.params["motion_estimator"]
  assert "pose" not in generator.batch_stats["motion_estimator"]
  rng = np.random.default_rng(1)
  source, driving, transformed = (
    rng.uniform(size=(2, size, size, 3)).astype(np.float32) for _ in range(3)
  )
  variables = {"params": generator.params, "batch_stats": generator.batch_stats}

  def forward(variables, frozen):
    model, variant = trainer.networks.model, trainer.objective.variant
    out, _ = training_forward(
      model, variant, variables, frozen, source, driving, transformed, None, False
    )
    return out

  out = jax.jit(forward)(variables, frozen)
  for frames, motion in ((source, "source_motion"), (driving, "driving_motion")):
    want = hopenet_head_pose(hopenet, frozen["hopenet"], frames)
    for angle in ("yaw", "pitch", "roll"):
      np.testing.assert_allclose(out[motion][angle], want[angle], atol=1e-4)
  assert float(np.std(np.asarray(out["driving_motion"]["yaw"]))) > 0  # frames differ


def test_evaluators_run_during_training(tmp_path, one_device_trainer, monkeypatch):
  """A ``config.evals`` evaluator due at step 2 writes ``eval/<name>/*`` to metrics.jsonl: the
  reconstruction PSNR / SSIM of the step-2 generator's parameter average on held-out synthetic heads (frames as saved
  8-bit), recomputed here with scikit-image, and the grid of what it scored."""
  from PIL import Image
  from skimage.metrics import peak_signal_noise_ratio, structural_similarity

  from mmfa_jax.evaluate import synthetic_items
  from mmfa_jax.evaluators import Evaluator, make_evaluators
  from mmfa_jax.inference import Animator

  config = _config(stop_after_steps=2)
  config.evals.test.update(dict(every_steps=2, num_videos=1, max_frames=2, batch_size=2))
  evaluators = tuple(make_evaluators(config))
  assert evaluators == (Evaluator("test", 2, "synthetic", "reconstruction", 1, 2, PIXEL, 2),)
  monkeypatch.setattr(one_device_trainer, "evaluators", evaluators)
  generator, _ = train_and_evaluate(config, str(tmp_path / "run"), trainer=one_device_trainer)
  record = next(r for r in read_metrics(str(tmp_path / "run")) if "eval/test/psnr" in r)
  assert record["step"] == 2
  # The evaluation animates with the parameter average (optim.ema_decay), not the last parameters.
  assert _max_difference(_params(generator), _params({"params": generator.ema_params})) > 1e-5
  variables = {"params": generator.averaged_params, "batch_stats": generator.batch_stats}
  animator = Animator(config.model, variables, image_size=config.image_size, batch_size=2)
  (item,) = synthetic_items("reconstruction", config.image_size, 1, 2)
  frames = np.round(animator.animate(item.source, item.driving, mode="absolute") * 255) / 255
  psnr = [peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(frames, item.target)]
  ssim = [
    structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                          data_range=1.0, channel_axis=-1)
    for p, t in zip(frames, item.target)
  ]  # fmt: skip
  assert record["eval/test/psnr"] == pytest.approx(np.mean(psnr), abs=1e-3)
  assert record["eval/test/ssim"] == pytest.approx(np.mean(ssim), abs=1e-4)
  # Its grid: source | driving | generated | target at the last frame, the one video's row.
  grid = np.asarray(Image.open(tmp_path / "run" / "samples" / "eval_test_step_0000002.png"))
  size = config.image_size
  assert grid.shape == (size + 2, 4 * (size + 2), 3)
  tiles = [grid[:size, c * (size + 2) : c * (size + 2) + size].astype(int) for c in range(4)]
  for tile, want in zip(tiles, (item.source, item.driving[-1], frames[-1], item.target[-1])):
    np.testing.assert_allclose(tile, np.round(want * 255), atol=1)
  with pytest.raises(ValueError, match="not among"):
    Evaluator("bad", 1, metrics=("fid",))


PIXEL = ("l1", "psnr", "ssim")


# Runs ``python -m mmfa_jax.main`` with orbax's final rename of the checkpoint of step argv[1]
# replaced by SIGKILL: the process dies with that checkpoint's files written to their temporary
# directory and not yet committed, as a machine losing power there would leave it.
_KILLED_IN_CHECKPOINT = """
import os, signal, sys
from absl import app
from orbax.checkpoint._src.path import atomicity
from mmfa_jax import main

rename = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self, *args, **kwargs):
  if self.get_final().name == sys.argv[1]:
    os.kill(os.getpid(), signal.SIGKILL)
  return await rename(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = finalize
app.run(main.main, argv=[sys.argv[0], *sys.argv[2:]], flags_parser=main.parse_flags)
"""


@pytest.mark.slow
def test_sigkill_in_a_checkpoint_write_then_resume_equals_the_uninterrupted_run(tmp_path):
  """A run killed while its step-4 checkpoint is being written resumes from step 2 and ends with
  the parameters of the same command run without interruption (a command-line run, not this
  module's in-process runs, whose steps differ from it by about 2e-3 from step 2 on)."""
  import subprocess
  import sys

  from tool_runner import ROOT

  workdir = tmp_path / "killed"
  flags = ["--config=configs/synthetic.py:tiny", *_flags("data", OVERRIDES["data"]),
           *_flags("optim", OVERRIDES["optim"]), *_flags("train", OVERRIDES["train"])]  # fmt: skip
  args = [f"--workdir={workdir}", *flags]
  cache = str(tmp_path / "cache")  # the three runs compile the step once
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", MMFA_JAX_CACHE_DIR=cache)
  killed = subprocess.run([sys.executable, "-c", _KILLED_IN_CHECKPOINT, str(STEPS), *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)  # fmt: skip
  assert killed.returncode == -9, killed.stderr[-3000:]
  left = sorted(os.listdir(workdir / "checkpoints"))
  assert left[0] == "2" and left[1].startswith(f"{STEPS}.orbax-checkpoint-tmp"), left

  resumed = _main(*args, cache=cache)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from {workdir / 'checkpoints'} at step 2" in resumed.stderr
  assert sorted(os.listdir(workdir / "checkpoints")) == ["2", str(STEPS)]
  from mmfa_jax.checkpoints import TrainingCheckpoints

  straight = _main(f"--workdir={tmp_path / 'straight'}", *flags, cache=cache)
  assert straight.returncode == 0, straight.stderr[-3000:]
  for side in ("generator", "discriminator"):
    saved = []
    for run in (workdir, tmp_path / "straight"):
      checkpoints = TrainingCheckpoints(str(run / "checkpoints"), 2, async_save=False)
      try:
        saved.append(_params(checkpoints.restore_arrays(STEPS, side)))
      finally:
        checkpoints.close()
    assert _max_difference(*saved) <= 1e-6, side
  assert [r["step"] for r in read_metrics(str(workdir))] == [2, STEPS]


def test_discriminator_is_not_trained_without_the_gan_terms(one_device_trainer):
  """Without the GAN terms nothing the generator learns reads the discriminator: the update leaves
  it as it came (no ``discriminator_gan``), and the MMFA step passes it through untrained."""
  from mmfa_jax.train import adversarial_update, train_step
  from mmfa_jax.train_state import TrainState, make_optimizer

  def state(value):
    return TrainState.create({"w": jnp.full((3,), value)}, {}, make_optimizer(0.5))

  def generator_loss(params):
    return jnp.sum(params["w"] ** 2), {"batch_stats": {}}

  generator, discriminator = state(1.0), state(2.0)
  new_generator, new_discriminator, _, facts = adversarial_update(
    generator, discriminator, generator_loss, None
  )
  assert new_discriminator is discriminator
  assert float(new_generator.params["w"][0]) < 1.0  # the generator did take its step
  assert sorted(facts) == ["discriminator_skipped", "generator_loss", "generator_skipped"]
  assert int(facts["discriminator_skipped"]) == 0

  config = _config()
  config.loss.update(dict(generator_gan=0.0, feature_matching=(0.0, 0.0, 0.0, 0.0)))
  objective = Objective(config, one_device_trainer.networks)
  assert not objective.reads_discriminator and one_device_trainer.objective.reads_discriminator
  rng = np.random.default_rng(0)
  frames = rng.uniform(size=(2, 8, config.image_size, config.image_size, 3)).astype(np.float32)
  batch = {"source": frames[0], "driving": frames[1]}
  g_shapes, d_shapes = one_device_trainer.abstract_states()
  step = functools.partial(train_step, objective)
  out = jax.eval_shape(step, g_shapes, d_shapes, {}, batch, jax.random.key(0))
  assert "discriminator_gan" not in out[2] and "generator_loss" in out[2]
  assert jax.tree.structure(out[1]) == jax.tree.structure(d_shapes)


def test_evaluations_compile_ahead_on_a_copy_of_the_generator(one_device_trainer):
  """``compile_ahead`` runs the evaluations on copies of the generator's arrays (the first step
  donates them: here they are deleted at once), so the first real evaluation compiles nothing."""
  from mmfa_jax.compilation_cache import CompileCounter
  from mmfa_jax.evaluators import compile_ahead, make_evaluators, run_due

  config = _config()
  config.evals.test.update(dict(every_steps=2, num_videos=2, max_frames=2, batch_size=2))
  evaluators = make_evaluators(config)
  generator, _ = one_device_trainer.init_states()
  thread = compile_ahead(evaluators, config, generator, one_device_trainer.frozen)
  for leaf in jax.tree.leaves((generator.params, generator.ema_params, generator.batch_stats)):
    leaf.delete()  # as the first training step's donation does
  thread.join()
  fresh, _ = one_device_trainer.init_states()
  with CompileCounter() as compiles:
    scalars = run_due(evaluators, config, fresh, one_device_trainer.frozen, 2, 4)
  assert compiles.compiled == 0 and compiles.loaded == 0, compiles.summary()
  assert sorted(scalars) == ["eval/test/l1", "eval/test/psnr", "eval/test/ssim"]
  assert 5.0 < scalars["eval/test/psnr"] < 60.0
