"""mmfa_jax against the PyTorch reference: the same model on the same device, in one run.

The face-vid2vid model of ``--config`` (default ``vox_face_vid2vid``: SPADE generator, 256 px) is
built as the PyTorch twin (``pretrained_converters.torch_reference``, the reference's layers), given
random weights, saved as a reference-layout training checkpoint and converted with the project's
own converter, so both frameworks run the same weights (the first row checks that: the largest
pixel difference of one animated frame). Then, in float32 and bfloat16 (``torch.autocast`` /
``Animator(dtype=...)``):

- animate, one frame per call, as the reference demo does it (per frame: head pose and expression
  of the driving frame, keypoints, generator; the demo's generator re-encodes the source each call,
  mmfa_jax keeps the encoded source), and in batches of ``--batch-sizes``;
- one full training step at ``--train-batch`` with every loss term of the config (VGG19 pyramid,
  hinge GAN and feature matching, equivariance with a random TPS warp, keypoint prior, head pose
  against Hopenet, expression prior; Adam on generator, keypoint detector, head-pose estimator, then
  the discriminator step). The PyTorch step is written here from architecture.md 9; both sides use
  random frozen VGG19 / Hopenet (the values do not change the cost).

  python benchmarks/against_torch.py [--config vox_face_vid2vid] [--batch-sizes 16]
      [--dtypes float32 bfloat16] [--frames 4] [--train-batch 1] [--no-train | --no-animate]
      [--json OUT.jsonl]

Seconds are medians of ``--repeats`` after a warm-up call; ``speed`` is PyTorch's time over
mmfa_jax's (above 1: mmfa_jax is faster). The training row also gives the step's work as PyTorch
counts it (``torch.utils.flop_counter``: convolutions and matrix products, forward and backward,
both updates), each side's rate in GFLOP/s, and the device's float32 matrix-product rate measured
here (``matmul_rate``): work over that rate is what a step would take if every convolution ran as
fast as one large matrix product, a floor for both frameworks.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _measure import append_json, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _median_seconds(fn, repeats: int, sync) -> float:
  fn()  # warm-up (compilation, allocator, autotuning)
  sync()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    sync()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Models, weights


def build_torch_modules(config, device):
  """The reference's networks with random weights (spectral norms settled, BatchNorm statistics
  randomised), in eval mode, plus the frozen VGG19 and Hopenet."""
  import torch

  from pretrained_converters import torch_reference as ref

  torch.manual_seed(0)
  modules = ref.face_vid2vid_modules(config.model, "spade")
  size = config.image_size
  source, kp = torch.rand(1, 3, size, size), 0.5 * torch.rand(1, config.model.num_kp, 3)
  ref.settle_spectral_norm(modules["generator"], source, kp, kp, steps=1)
  ref.settle_spectral_norm(modules["discriminator"], {"1": source}, steps=1)
  for i, module in enumerate(modules.values()):
    ref.randomize_batchnorm(module, seed=i).eval()
  frozen = {"vgg19": ref.VGG19().eval(), "hopenet": ref.randomize_batchnorm(ref.Hopenet()).eval()}
  for module in (*modules.values(), *frozen.values()):
    module.to(device)
  return modules, frozen


def converted_variables(modules, config, directory: str):
  """The modules saved as the reference's checkpoint file, converted by the project's converter."""
  import torch

  from pretrained_converters.convert import convert_face_vid2vid

  path = os.path.join(directory, "reference-checkpoint.pth.tar")
  torch.save({name: module.state_dict() for name, module in modules.items()}, path)
  return convert_face_vid2vid(path, config, "spade").variables


# ---------------------------------------------------------------------------------------------
# PyTorch: the reference demo and training step


def torch_keypoints(canonical, he):
  import torch

  from pretrained_converters import torch_reference as ref

  rotation = ref.reference_rotation(
    ref._angles(he["yaw"]), ref._angles(he["pitch"]), ref._angles(he["roll"])
  )
  posed = torch.einsum("bij,bkj->bki", rotation, canonical)
  return posed + he["t"][:, None] + he["exp"].view(canonical.shape)


def torch_animate(modules, source, frames, kp_source, kp_initial, canonical):
  """The demo's per-batch work (relative keypoints): NCHW frames in, NCHW frames out."""
  he = modules["he_estimator"](frames)
  kp_driving = torch_keypoints(canonical.expand(frames.shape[0], -1, -1), he)
  kp_norm = kp_source + (kp_driving - kp_initial)
  batch = frames.shape[0]
  return modules["generator"](source.expand(batch, -1, -1, -1), kp_source.expand(batch, -1, -1),
                              kp_norm)["prediction"]  # fmt: skip


def _random_tps(batch: int, generator, device):
  """architecture.md 9.2: affine N(0, 0.05^2) around the identity plus a 5 x 5 L1 TPS, N(0, 0.005^2)."""
  import torch

  theta = torch.eye(2, 3, device=device)[None] + 0.05 * torch.randn(
    batch, 2, 3, generator=generator
  ).to(device)
  axis = torch.linspace(-1, 1, 5, device=device)
  control = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).view(-1, 2)  # (25, 2)
  coefficients = 0.005 * torch.randn(batch, 1, 25, generator=generator).to(device)

  def warp(points):  # (B, N, 2) -> (B, N, 2)
    moved = torch.einsum("bij,bnj->bni", theta[..., :2], points) + theta[:, None, :, 2]
    distance = (points[:, :, None] - control[None, None]).abs().sum(-1)  # (B, N, 25), L1
    radial = distance**2 * torch.log(distance + 1e-6)
    return moved + (radial * coefficients).sum(-1, keepdim=True)

  return warp


def matmul_rate(device, sync, size: int = 2048, repeats: int = 5) -> float:
  """The device's float32 rate in GFLOP/s on one ``size`` x ``size`` matrix product (PyTorch's
  BLAS, its default threads; the median of ``repeats``, ``sync`` waiting for the device)."""
  import torch

  a = torch.randn(size, size, device=device)
  b = torch.randn(size, size, device=device)
  return 2 * size**3 / _median_seconds(lambda: a @ b, repeats, sync) / 1e9


def counted_flops(step) -> int:
  """The floating-point operations of one call of ``step`` as ``torch.utils.flop_counter`` counts
  them (convolutions and matrix products, forward and backward)."""
  from torch.utils.flop_counter import FlopCounterMode

  counter = FlopCounterMode(display=False)
  with counter:
    step()
  return counter.get_total_flops()


def torch_training_step(
  modules, frozen, optimizers, source, driving, loss_config, scales, generator
):
  """One step of the reference's objective (architecture.md 9) at the config's weights."""
  import torch
  import torch.nn.functional as F

  from pretrained_converters import torch_reference as ref

  kp_detector, he_estimator = modules["kp_detector"], modules["he_estimator"]
  image_generator, discriminator = modules["generator"], modules["discriminator"]
  batch, _, height, width = driving.shape
  canonical = kp_detector(source)["value"]
  he_source, he_driving = he_estimator(source), he_estimator(driving)
  kp_source = torch_keypoints(canonical, he_source)
  kp_driving = torch_keypoints(canonical, he_driving)
  prediction = image_generator(source, kp_source, kp_driving)["prediction"]

  loss = 0.0
  # VGG19 pyramid (or, with perceptual_features='pixels', L1 on the pyramid's pixels).
  features = frozen["vgg19"] if loss_config.perceptual_features == "vgg19" else lambda x: [x]
  for scale in scales:
    if height * scale < 16:  # VGG19's four poolings need 16 px (only tiny test configs)
      continue
    got = features(ref.antialias_t(prediction, scale))
    want = features(ref.antialias_t(driving, scale))
    for weight, g, w in zip(loss_config.perceptual_layer_weights, got, want):
      loss = loss + weight * (g - w.detach()).abs().mean()
  fake_maps, fake_score = discriminator({"1": prediction})["1"]
  real_maps, _ = discriminator({"1": driving})["1"]
  loss = loss - loss_config.generator_gan * fake_score.mean()  # hinge
  for weight, real, fake in zip(loss_config.feature_matching, real_maps, fake_maps):
    loss = loss + weight * (real.detach() - fake).abs().mean()
  # Equivariance: the warped driving frame's keypoints, mapped back by the same warp.
  warp = _random_tps(batch, generator, driving.device)
  ys, xs = torch.meshgrid(
    torch.linspace(-1, 1, height, device=driving.device),
    torch.linspace(-1, 1, width, device=driving.device),
    indexing="ij",
  )
  grid = warp(torch.stack([xs, ys], -1).view(1, -1, 2).expand(batch, -1, -1))
  warped = F.grid_sample(
    driving, grid.view(batch, height, width, 2), padding_mode="reflection", align_corners=False
  )
  kp_warped = torch_keypoints(canonical, he_estimator(warped))
  loss = (
    loss + loss_config.equivariance * (kp_driving[..., :2] - warp(kp_warped[..., :2])).abs().mean()
  )
  # Keypoint prior (every ordered pair, diagonal included, as the reference), depth prior.
  distance = ((kp_driving[:, :, None] - kp_driving[:, None] + 1e-6) ** 2).sum(-1)
  prior = F.relu(loss_config.keypoint_distance - distance).mean(0).sum()
  prior = prior + (kp_driving[..., 2].mean(-1) - loss_config.keypoint_depth).abs().mean()
  loss = loss + loss_config.keypoint_prior * prior
  with torch.no_grad():
    targets = [ref._angles(x) for x in frozen["hopenet"](ref.hopenet_input(driving))]
  for name, target in zip(("yaw", "pitch", "roll"), targets):
    loss = loss + loss_config.headpose * (ref._angles(he_driving[name]) - target).abs().mean()
  loss = loss + loss_config.deformation_prior * he_driving["exp"].abs().sum(-1).mean()
  for optimizer in optimizers.values():
    optimizer.zero_grad(set_to_none=True)
  loss.backward()
  for name in ("generator", "kp_detector", "he_estimator"):
    optimizers[name].step()
  optimizers["discriminator"].zero_grad(set_to_none=True)  # what leaked into D in the G step
  real_score = discriminator({"1": driving})["1"][1]
  fake_score = discriminator({"1": prediction.detach()})["1"][1]
  disc_loss = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
  disc_loss.backward()
  optimizers["discriminator"].step()
  return float(loss.detach()), float(disc_loss.detach())


def _rates(flops: int, torch_s: float, jax_s: float, device, sync) -> dict:
  """The training row's work and rates (the module docstring), printed and returned for JSON."""
  rate = matmul_rate(device, sync)
  rates = dict(
    gflop=round(flops / 1e9, 1),
    torch_gflops=round(flops / torch_s / 1e9, 1),
    jax_gflops=round(flops / jax_s / 1e9, 1),
    matmul_gflops=round(rate, 1),
    floor_s=round(flops / 1e9 / rate, 3),
  )
  print(
    f"  work {rates['gflop']} GFLOP: PyTorch {rates['torch_gflops']} GFLOP/s, mmfa_jax "
    f"{rates['jax_gflops']} GFLOP/s; a {rate:.1f} GFLOP/s matrix product would take "
    f"{rates['floor_s']} s",
    flush=True,
  )
  return rates


# ---------------------------------------------------------------------------------------------


def _jax_training(config_name: str, batch: int, dtype: str, repeats: int) -> dict:
  """The mmfa_jax training step measured by ``train_step.py`` in a fresh process (its memory is
  not shared with the PyTorch models here): its JSON result (``step_s``, ``peak_gib``, ...)."""
  command = [sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"), "--config",
             config_name, "--steps", str(repeats), "--one", dtype, str(batch)]  # fmt: skip
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
  # JAX's preallocation stays on there even when this process turned it off to share the GPU with
  # PyTorch: a step that autotunes without it may find no block for its temporaries (measured on
  # an H200: RESOURCE_EXHAUSTED for one 45 GiB block). PyTorch's cached blocks are freed first.
  env.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
  # Its log (compile times, errors) goes to this process's stderr as it comes.
  done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
  lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
  if done.returncode or not lines:
    tail = " | ".join(done.stdout.strip().splitlines()[-3:])
    raise RuntimeError(f"the mmfa_jax training step failed (exit {done.returncode}): {tail}")
  return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--config", default="vox_face_vid2vid", help="module under configs/")
  parser.add_argument("--batch-sizes", type=int, nargs="*", default=[16],
                      help="batched animation sizes (besides one frame per call)")  # fmt: skip
  parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  parser.add_argument("--frames", type=int, default=4, help="frames per per-frame measurement")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--train-batch", type=int, default=1)
  parser.add_argument("--no-train", action="store_true", help="animation only")
  parser.add_argument("--no-animate", action="store_true", help="training step only")
  parser.add_argument("--json", help="append one JSON line per measurement to this file")
  args = parser.parse_args()

  import jax
  import numpy as np
  import torch

  from mmfa_jax.compilation_cache import enable_compilation_cache
  from mmfa_jax.inference import Animator

  enable_compilation_cache()
  config = load_config(args.config)
  size = config.image_size
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  jax_device = jax.devices()[0]

  def torch_sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  modules, frozen = build_torch_modules(config, device)
  with tempfile.TemporaryDirectory() as directory:
    variables = converted_variables(modules, config, directory)["model"]
  model_config = config.model
  with model_config.unlocked():
    model_config.variant, model_config.generator.kind = "face_vid2vid", "spade"

  rng = np.random.default_rng(0)
  source = rng.uniform(size=(size, size, 3)).astype(np.float32)
  largest = max([1, *args.batch_sizes, 0 if args.no_train else args.train_batch])
  frames = rng.uniform(size=(max(args.frames, largest), size, size, 3)).astype(np.float32)
  source_t = torch.from_numpy(source).permute(2, 0, 1)[None].to(device)
  frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2).to(device)

  versions = dict(jax=jax.__version__, torch=torch.__version__)
  print(f"{args.config}: {size} px; {jax_device.device_kind} ({jax_device.platform}); {versions}")
  print(f"{'what':<34} {'dtype':<9} {'batch':>5} {'torch s':>9} {'jax s':>9} {'speed':>6}")

  def report(what: str, dtype: str, batch: int, torch_s: float, jax_s: float, **extra) -> None:
    print(f"{what:<34} {dtype:<9} {batch:>5} {torch_s:>9.4f} {jax_s:>9.4f} "
          f"{torch_s / jax_s:>6.2f}", flush=True)  # fmt: skip
    append_json(args.json, dict(
      config=args.config, what=what, dtype=dtype, batch_size=batch, torch_s=round(torch_s, 5),
      jax_s=round(jax_s, 5), speed=round(torch_s / jax_s, 3), device=jax_device.device_kind,
      platform=jax_device.platform, xla_flags=os.environ.get("XLA_FLAGS", ""), **versions,
      **extra,
    ))  # fmt: skip

  for dtype in args.dtypes:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")
    with torch.no_grad(), autocast:
      canonical = modules["kp_detector"](source_t)["value"]
      kp_source = torch_keypoints(canonical, modules["he_estimator"](source_t))
      kp_initial = torch_keypoints(canonical, modules["he_estimator"](frames_t[:1]))
    if not args.no_animate:
      animator = Animator(model_config, variables, image_size=size, batch_size=1, dtype=dtype)
      state = animator.encode_source(source)

      if dtype == "float32":  # the same weights: one frame from both
        with torch.no_grad():
          want = torch_animate(modules, source_t, frames_t[:1], kp_source, kp_initial, canonical)
        got = next(animator.iter_animate_encoded(state, frames[:1]))
        difference = float(np.abs(got - want[0].permute(1, 2, 0).cpu().numpy()).max())
        print(f"same weights: largest pixel difference of one frame {difference:.2e}", flush=True)

      def torch_frames(batch, autocast=autocast, canonical=canonical, kp_source=kp_source,
                       kp_initial=kp_initial):  # fmt: skip
        with torch.no_grad(), autocast:
          for start in range(0, args.frames if batch == 1 else batch, batch):
            out = torch_animate(modules, source_t, frames_t[start : start + batch], kp_source,
                                kp_initial, canonical)  # fmt: skip
            out.float().cpu()  # frames reach the host, as the demo's

      def jax_frames(batch, animator=animator, state=state):
        if batch == 1:
          for start in range(args.frames):
            list(animator.iter_animate_encoded(state, frames[start : start + 1]))
        else:
          list(animator.iter_animate_encoded(state, frames[:batch]))

      torch_s = _median_seconds(lambda: torch_frames(1), args.repeats, torch_sync) / args.frames
      jax_s = _median_seconds(lambda: jax_frames(1), args.repeats, lambda: None) / args.frames
      report("animate, one frame per call (s/frame)", dtype, 1, torch_s, jax_s)
      for batch in args.batch_sizes:
        batched = Animator(model_config, variables, image_size=size, batch_size=batch, dtype=dtype)
        state = batched.encode_source(source)
        torch_s = _median_seconds(lambda b=batch: torch_frames(b), args.repeats, torch_sync) / batch
        jax_s = (
          _median_seconds(
            lambda b=batch, a=batched, s=state: jax_frames(b, a, s), args.repeats, lambda: None
          )
          / batch
        )
        report("animate, batched (s/frame)", dtype, batch, torch_s, jax_s)

    if args.no_train:
      continue
    batch = args.train_batch
    # mmfa_jax's step first, in a fresh process, while this one holds only the models: on a CPU
    # the memory PyTorch's step touches stays with this process (measured: the face-vid2vid step
    # at batch 1 after it ran out of the machine's 23 GiB).
    print(f"mmfa_jax train step {dtype} in a fresh process", flush=True)
    jax_result = _jax_training(args.config, batch, dtype, args.repeats)
    for module in modules.values():
      module.train()
    optimizers = {
      name: torch.optim.Adam(module.parameters(), lr=2e-4, betas=(0.5, 0.999))
      for name, module in modules.items()
    }
    generator = torch.Generator().manual_seed(0)
    source_b = frames_t[:batch].clone()
    driving_b = frames_t.flip(0)[:batch].clone()

    def torch_step(optimizers=optimizers, generator=generator, autocast=autocast,
                   source_b=source_b, driving_b=driving_b):  # fmt: skip
      with autocast:
        torch_training_step(modules, frozen, optimizers, source_b, driving_b, config.loss,
                            tuple(config.perceptual_scales),
                            generator)  # fmt: skip

    if device.type == "cuda":
      torch.cuda.reset_peak_memory_stats()
    torch_s = _median_seconds(torch_step, args.repeats, torch_sync)
    flops = counted_flops(torch_step) if dtype == "float32" else None
    for module in modules.values():
      module.eval()
    peak_torch = (
      round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.type == "cuda" else None
    )
    print(f"PyTorch train step {dtype}: {torch_s:.4f} s, peak {peak_torch} GiB", flush=True)
    optimizers.clear()  # the Adam moments and cached blocks go back before the next dtype
    if device.type == "cuda":
      torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):  # freed host memory back to the system, for the next
      ctypes.CDLL("libc.so.6").malloc_trim(0)
    report(
      "train step (s/step)",
      dtype,
      batch,
      torch_s,
      jax_result["step_s"],
      torch_peak_gib=peak_torch,
      jax_peak_gib=jax_result["peak_gib"],
      jax_peak_kind=jax_result["peak_kind"],
      **({} if flops is None else _rates(flops, torch_s, jax_result["step_s"], device, torch_sync)),
    )


if __name__ == "__main__":
  main()
