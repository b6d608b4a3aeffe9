"""How fast the generator's appearance path learns when the motion is exact: the ceiling of training.

Trains the config's image generator alone on the built-in synthetic heads as an autoencoder: the
driving keypoints equal the source keypoints (random per sample), so the dense motion is the
identity and nothing about motion has to be learned; the loss is the config's perceptual loss
with pixel features (``losses.multiscale_perceptual`` for MMFA's multi-scale generator,
``losses.perceptual_pyramid`` otherwise) and the optimizer Adam with the config's learning rate
and betas. Every ``--eval-every`` steps it prints the held-out heads' PSNR (frame 0 of
``--eval-heads`` heads of the evaluation seed, eval-mode BatchNorm): what the whole model could
reach on frames that need no motion after that many steps. For scale it first prints what the
held-out heads score against themselves blurred (Gaussian, sigma 1, 2, 3 px): an output in place
but that blurred. ``python -m mmfa_jax.evaluate --data synthetic`` reports the same number of a
real run as ``self_reconstruction``.

  python benchmarks/appearance_ceiling.py [--config synthetic] [--steps 400] [--eval-every 50]
      [--learning-rate LR] [--batch-size B] [--output DIR] [--json OUT.jsonl]

``--output`` writes ``grid.png`` at the end (held-out heads | generator output).
"""

from __future__ import annotations

import argparse
import os
import time

from _measure import append_json, load_config

EVAL_KEYPOINT_SEED = 1
BLUR_SIGMAS = (1.0, 2.0, 3.0)  # pixels


def _generate(model, source, kp_source, kp_driving, train):
  """``AnimationModel``'s image generator alone (the ``method`` of ``apply`` and ``init``)."""
  return model.image_generator(source, kp_source, kp_driving, train)


def _frames(config, eval_heads: int):
  """Training frames (every 8th frame of the config's synthetic videos) and held-out frame 0s."""
  import numpy as np

  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads

  size, synthetic = config.image_size, config.data.synthetic
  heads = SyntheticHeads(synthetic.seed, synthetic.num_videos, synthetic.num_frames)
  train = np.stack(
    [
      heads.frame(v, f, size)
      for v in range(heads.num_videos)
      for f in range(0, heads.num_frames, 8)
    ]
  )  # (N, S, S, 3) in [0, 1]
  held_out = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=eval_heads)
  return train, np.stack([held_out.frame(v, 0, size) for v in range(eval_heads)])


def run(args: argparse.Namespace) -> list[dict]:
  import jax
  import numpy as np
  import optax

  from mmfa_jax import losses
  from mmfa_jax.initialization import init_variables
  from mmfa_jax.metrics import l1, psnr
  from mmfa_jax.models.animation import animation_model_from_config

  config = load_config(args.config)
  if config.data.get("source") != "synthetic":
    raise SystemExit(f"--config {args.config}: needs a synthetic-data config (data.source)")
  batch_size = args.batch_size or config.data.batch_size
  learning_rate = args.learning_rate or config.optim.learning_rate
  model = animation_model_from_config(config.model)  # only its image generator is used
  train, held_out = _frames(config, args.eval_heads)
  rng = np.random.default_rng(0)
  num_kp = config.model.num_kp

  def keypoints(count: int, generator_rng) -> np.ndarray:
    return generator_rng.uniform(-0.6, 0.6, (count, num_kp, 3)).astype(np.float32)  # (n, K, 3)

  eval_kp = keypoints(len(held_out), np.random.default_rng(EVAL_KEYPOINT_SEED))
  variables = init_variables(
    model, 0, held_out[:1], eval_kp[:1], eval_kp[:1], True, method=_generate
  )
  params, stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adam(learning_rate, config.optim.b1, config.optim.b2, eps=config.optim.eps)
  opt_state = tx.init(params)
  weights = tuple(config.loss.perceptual_layer_weights)[:1]

  def pixels(images):
    return [images]

  def loss_fn(params, stats, frames, kp):
    out, updated = model.apply(
      {"params": params, "batch_stats": stats},
      frames, kp, kp, True, method=_generate, mutable=["batch_stats"],
    )  # fmt: skip
    if "predictions" in out:
      loss = losses.multiscale_perceptual(
        pixels, out["predictions"], frames, weights, config.loss.perceptual_min_size
      )
    else:
      scales = tuple(config.perceptual_scales)
      loss = losses.perceptual_pyramid(pixels, out["prediction"], frames, scales, weights)
    return loss, updated["batch_stats"]

  @jax.jit
  def step(params, stats, opt_state, frames, kp):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, frames, kp)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  @jax.jit
  def reconstruct(params, stats, frames, kp):
    variables = {"params": params, "batch_stats": stats}
    out = model.apply(variables, frames, kp, kp, False, method=_generate)
    return out["prediction"]  # (B, S, S, 3)

  blurred = blurred_psnr(held_out)
  print(
    "held-out heads against their own Gaussian blur (sigma in px): "
    + ", ".join(f"sigma {sigma:g}: {value:.2f} dB" for sigma, value in blurred.items()),
    flush=True,
  )
  records, start = [], time.perf_counter()
  for index in range(args.steps + 1):
    if index:
      chosen = rng.integers(0, len(train), batch_size)
      params, stats, opt_state, loss = step(
        params, stats, opt_state, train[chosen], keypoints(batch_size, rng)
      )
    if index % args.eval_every == 0 or index == args.steps:
      output = np.asarray(reconstruct(params, stats, held_out, eval_kp))
      record = dict(
        config=args.config,
        step=index,
        seconds=round(time.perf_counter() - start, 1),
        loss=None if index == 0 else round(float(loss), 5),
        held_out_psnr=round(float(np.mean(psnr(output, held_out))), 3),
        held_out_l1=round(float(np.mean(l1(output, held_out))), 5),
        batch_size=batch_size,
        learning_rate=learning_rate,
        platform=jax.default_backend(),
        blurred_psnr={str(sigma): round(value, 3) for sigma, value in blurred.items()},
      )
      print(
        f"step {index:5d}  {record['seconds']:7.1f} s  held-out PSNR {record['held_out_psnr']:6.2f} dB"
        f"  L1 {record['held_out_l1']:.4f}",
        flush=True,
      )
      append_json(args.json, record)
      records.append(record)
  if args.output:
    _write_grid(args.output, held_out, output)
  return records


def blurred_psnr(frames, sigmas=BLUR_SIGMAS) -> dict[float, float]:
  """Mean PSNR (dB) of ``frames`` ``(B, H, W, 3)`` in [0, 1] against themselves blurred by a
  Gaussian of each ``sigma`` (pixels, borders extended): what an output exactly in place but that
  blurred would score, to read the held-out PSNR against."""
  import numpy as np
  from scipy.ndimage import gaussian_filter

  frames = np.asarray(frames, np.float64)
  result = {}
  for sigma in sigmas:
    blurred = gaussian_filter(frames, (0, sigma, sigma, 0), mode="nearest")
    mse = np.mean((blurred - frames) ** 2, axis=(1, 2, 3))
    result[sigma] = float(np.mean(10 * np.log10(1 / mse)))
  return result


def _write_grid(directory: str, frames, outputs) -> None:
  import numpy as np

  from mmfa_jax.visualize import save_png

  rows = [np.concatenate([f, o], axis=1) for f, o in zip(frames, outputs)]
  os.makedirs(directory, exist_ok=True)
  save_png(os.path.join(directory, "grid.png"), np.concatenate(rows, axis=0))


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawTextHelpFormatter
  )
  parser.add_argument("--config", default="synthetic", help="module under configs/ (synthetic...)")
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--eval-every", type=int, default=50)
  parser.add_argument("--eval-heads", type=int, default=8)
  parser.add_argument("--learning-rate", type=float, help="default: the config's")
  parser.add_argument("--batch-size", type=int, help="default: the config's")
  parser.add_argument("--output", help="directory for grid.png")
  parser.add_argument("--json", help="append one JSON line per evaluation to this file")
  args = parser.parse_args(argv)
  if args.steps < 0 or args.eval_every < 1 or args.eval_heads < 1:
    parser.error("--steps must be >= 0, --eval-every and --eval-heads >= 1")
  return run(args)


if __name__ == "__main__":
  main()
