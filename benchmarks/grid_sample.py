"""Times 3D grid_sample (trilinear, zeros, align_corners False) in JAX against PyTorch, in one run.

Real size by default: a batch of 16 appearance volumes of 32 channels x 16 x 64 x 64 warped by a
same-size grid (the generator's deform_input). Forward and forward+backward (gradients w.r.t. the
volume and the grid) are timed for each framework on its default device (``--torch-device cuda``
for a GPU run), each in its native layout (JAX channels-last, PyTorch channels-first).

  python benchmarks/grid_sample.py [--batch 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmfa_jax.ops import grid_sample_3d


def _time(fn, repeats: int, warmup: int) -> float:
  """Median wall-clock seconds of ``fn()`` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--channels", type=int, default=32)
  parser.add_argument("--shape", type=int, nargs=3, default=(16, 64, 64), metavar=("D", "H", "W"))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--torch-device", default="cpu")
  parser.add_argument("--skip-torch", action="store_true")
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  shape = (args.batch, *args.shape, args.channels)
  volume = rng.normal(size=shape).astype(np.float32)  # (B, D, H, W, C)
  grid = rng.uniform(-1.1, 1.1, size=(args.batch, *args.shape, 3)).astype(np.float32)
  cotangent = rng.normal(size=shape).astype(np.float32)

  forward = jax.jit(grid_sample_3d)

  @jax.jit
  def forward_backward(x, g):
    return jax.grad(lambda x, g: jnp.sum(grid_sample_3d(x, g) * cotangent), argnums=(0, 1))(x, g)

  x, g = jax.device_put(volume), jax.device_put(grid)
  results = {
    "jax forward": _time(lambda: forward(x, g).block_until_ready(), args.repeats, args.warmup),
    "jax forward+backward": _time(
      lambda: jax.block_until_ready(forward_backward(x, g)), args.repeats, args.warmup
    ),
  }

  if not args.skip_torch:
    import torch
    import torch.nn.functional as F

    device = torch.device(args.torch_device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tx = torch.from_numpy(volume).permute(0, 4, 1, 2, 3).contiguous().to(device)
    tg = torch.from_numpy(grid).to(device)
    tc = torch.from_numpy(cotangent).permute(0, 4, 1, 2, 3).contiguous().to(device)

    def torch_forward():
      with torch.no_grad():
        F.grid_sample(tx, tg, mode="bilinear", padding_mode="zeros", align_corners=False)
      sync()

    def torch_forward_backward():
      x_ = tx.detach().requires_grad_(True)
      g_ = tg.detach().requires_grad_(True)
      out = F.grid_sample(x_, g_, mode="bilinear", padding_mode="zeros", align_corners=False)
      torch.autograd.grad((out * tc).sum(), (x_, g_))
      sync()

    results["torch forward"] = _time(torch_forward, args.repeats, args.warmup)
    results["torch forward+backward"] = _time(torch_forward_backward, args.repeats, args.warmup)
    torch_info = f"torch {torch.__version__} on {device}, {torch.get_num_threads()} threads"
  else:
    torch_info = "torch skipped"

  print(f"3D grid_sample: volume {shape} (B, D, H, W, C), grid {grid.shape}, float32")
  print(
    f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); {torch_info}"
  )
  print(f"machine: {platform.machine()}, {platform.processor() or platform.system()}")
  print(f"median of {args.repeats} runs after {args.warmup} warm-up runs")
  for name, seconds in results.items():
    print(f"  {name:<24} {seconds * 1e3:10.1f} ms")
  if not args.skip_torch:
    for kind in ("forward", "forward+backward"):
      ratio = results[f"jax {kind}"] / results[f"torch {kind}"]
      print(f"  ratio jax/torch {kind:<17} {ratio:6.2f}  (< 1: JAX faster)")


if __name__ == "__main__":
  main()
