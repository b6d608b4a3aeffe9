"""How fast the generator learns when the keypoints are exact: the ceiling of training.

Trains the config's image generator (appearance encoder, dense motion, warp, decoder) alone on
the built-in synthetic heads, with keypoints that need no learning. ``--motion identity`` (the
default): an autoencoder, the driving keypoints equal the source keypoints (random per sample), so
the dense motion is the identity and nothing about motion has to be learned. ``--motion oracle``:
a source frame and a driving frame of the same head (every 4th frame of a video), each with its
true keypoints, the renderer's ``face_points`` (the first ``num_kp``: pupils, brows, nose, mouth,
chin, forehead, moved by the true pose, scale and translation), so what is left to learn is how
to move the source by them; it also prints the copy-the-source PSNR of the held-out pairs and the
dense motion's background weight (``mask_background``: near 1, the keypoints move nothing). The
loss is the config's perceptual loss
with pixel features (``losses.multiscale_perceptual`` for MMFA's multi-scale generator,
``losses.perceptual_pyramid`` otherwise) and the optimizer Adam with the config's learning rate
and betas. Every ``--eval-every`` steps it prints the held-out heads' PSNR (frame 0 of
``--eval-heads`` heads of the evaluation seed, eval-mode BatchNorm): what the whole model could
reach on frames that need no motion after that many steps (oracle: the driving frames 8, 16,
..., 56 of each held-out head, its frame 0 the source). For scale it first prints what the
held-out heads score against themselves blurred (Gaussian, sigma 1, 2, 3 px): an output in place
but that blurred. ``python -m mmfa_jax.evaluate --data synthetic`` reports the same number of a
real run as ``self_reconstruction``.

  python benchmarks/appearance_ceiling.py [--config synthetic] [--steps 400] [--eval-every 50]
      [--learning-rate LR] [--batch-size B] [--motion identity|oracle] [--output DIR]
      [--json OUT.jsonl]

``--output`` writes ``grid.png`` at the end (held-out driving frames | generator output).
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


ORACLE_EVAL_FRAMES = range(8, 64, 8)  # driving frames of each held-out head; frame 0 the source


class Pairs:
  """Training and held-out (source, driving, kp_source, kp_driving) of one ``--motion``.

  ``sample(rng, batch)`` draws a training batch; ``held_out`` is the fixed held-out batch. Frames
  ``(n, S, S, 3)`` in [0, 1], keypoints ``(n, K, 3)`` (x, y, z) in [-1, 1] image units."""

  def __init__(self, config, motion: str, eval_heads: int):
    import numpy as np

    from mmfa_jax.data.synthetic import FACE_POINTS, HELD_OUT_SEED, SyntheticHeads

    self.motion, self.num_kp = motion, config.model.num_kp
    if motion == "oracle" and self.num_kp > len(FACE_POINTS):
      raise SystemExit(
        f"--motion oracle: the config has {self.num_kp} keypoints, the renderer's face_points "
        f"give {len(FACE_POINTS)}"
      )
    size, synthetic = config.image_size, config.data.synthetic
    heads = SyntheticHeads(synthetic.seed, synthetic.num_videos, synthetic.num_frames)
    held = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=eval_heads)
    if motion == "identity":
      self.frames = np.stack(
        [
          heads.frame(v, f, size)
          for v in range(heads.num_videos)
          for f in range(0, heads.num_frames, 8)
        ]
      )  # (N, S, S, 3): every 8th frame of every video
      frames = np.stack([held.frame(v, 0, size) for v in range(eval_heads)])
      kp = self._random_keypoints(eval_heads, np.random.default_rng(EVAL_KEYPOINT_SEED))
      self.held_out = (frames, frames, kp, kp)
      return
    frames = range(0, heads.num_frames, 4)  # of each training video
    self.frames = np.stack(
      [[heads.frame(v, f, size) for f in frames] for v in range(heads.num_videos)]
    )  # (V, F, S, S, 3)
    self.keypoints = np.stack(
      [[self._true_keypoints(heads, v, f) for f in frames] for v in range(heads.num_videos)]
    )  # (V, F, K, 3)
    pairs = [(v, f) for v in range(eval_heads) for f in ORACLE_EVAL_FRAMES]
    self.held_out = (
      np.stack([held.frame(v, 0, size) for v, _ in pairs]),
      np.stack([held.frame(v, f, size) for v, f in pairs]),
      np.stack([self._true_keypoints(held, v, 0) for v, _ in pairs]),
      np.stack([self._true_keypoints(held, v, f) for v, f in pairs]),
    )

  def _random_keypoints(self, count: int, rng):
    return rng.uniform(-0.6, 0.6, (count, self.num_kp, 3)).astype("float32")  # (n, K, 3)

  def _true_keypoints(self, heads, video: int, frame: int):
    from mmfa_jax.data.synthetic import face_points

    return face_points(heads.identity(video), heads.motion(video, frame))[: self.num_kp]

  def sample(self, rng, batch: int):
    if self.motion == "identity":
      frames = self.frames[rng.integers(0, len(self.frames), batch)]
      kp = self._random_keypoints(batch, rng)
      return frames, frames, kp, kp
    video = rng.integers(0, self.frames.shape[0], batch)
    source, driving = (rng.integers(0, self.frames.shape[1], batch) for _ in range(2))
    return (
      self.frames[video, source],
      self.frames[video, driving],
      self.keypoints[video, source],
      self.keypoints[video, driving],
    )


def run(args: argparse.Namespace) -> list[dict]:
  import jax
  import jax.numpy as jnp
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
  pairs = Pairs(config, args.motion, args.eval_heads)
  source, driving, kp_source, kp_driving = pairs.held_out
  rng = np.random.default_rng(0)
  variables = init_variables(
    model, 0, source[:1], kp_source[:1], kp_driving[:1], True, method=_generate
  )
  params, stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adam(learning_rate, config.optim.b1, config.optim.b2, eps=config.optim.eps)
  opt_state = tx.init(params)
  weights = tuple(config.loss.perceptual_layer_weights)[:1]
  scales, min_size = tuple(config.perceptual_scales), config.loss.perceptual_min_size

  def pixels(images):
    return [images]

  def loss_fn(params, stats, source, driving, kp_source, kp_driving):
    out, updated = model.apply(
      {"params": params, "batch_stats": stats},
      source, kp_source, kp_driving, True, method=_generate, mutable=["batch_stats"],
    )  # fmt: skip
    loss = losses.generated_perceptual(pixels, out, driving, weights, scales, min_size)
    return loss, updated["batch_stats"]

  @jax.jit
  def step(params, stats, opt_state, *batch):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, *batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  @jax.jit
  def reconstruct(params, stats, source, kp_source, kp_driving):
    variables = {"params": params, "batch_stats": stats}
    out = model.apply(variables, source, kp_source, kp_driving, False, method=_generate)
    return out["prediction"], jnp.mean(out["mask"][..., 0])  # (B, S, S, 3), background weight

  blurred = blurred_psnr(driving)
  print(
    "held-out frames against their own Gaussian blur (sigma in px): "
    + ", ".join(f"sigma {sigma:g}: {value:.2f} dB" for sigma, value in blurred.items()),
    flush=True,
  )
  copy_source = float(np.mean(psnr(source, driving)))
  if args.motion == "oracle":
    print(f"held-out pairs, copying the source: {copy_source:.2f} dB", flush=True)
  records, start = [], time.perf_counter()
  for index in range(args.steps + 1):
    if index:
      batch = pairs.sample(rng, batch_size)
      params, stats, opt_state, loss = step(params, stats, opt_state, *batch)
    if index % args.eval_every == 0 or index == args.steps:
      output, background = reconstruct(params, stats, source, kp_source, kp_driving)
      output = np.asarray(output)
      record = dict(
        config=args.config,
        motion=args.motion,
        step=index,
        seconds=round(time.perf_counter() - start, 1),
        loss=None if index == 0 else round(float(loss), 5),
        held_out_psnr=round(float(np.mean(psnr(output, driving))), 3),
        held_out_l1=round(float(np.mean(l1(output, driving))), 5),
        copy_source_psnr=round(copy_source, 3),
        mask_background=round(float(background), 4),
        batch_size=batch_size,
        learning_rate=learning_rate,
        platform=jax.default_backend(),
        blurred_psnr={str(sigma): round(value, 3) for sigma, value in blurred.items()},
      )
      print(
        f"step {index:5d}  {record['seconds']:7.1f} s  held-out PSNR {record['held_out_psnr']:6.2f} dB"
        f"  L1 {record['held_out_l1']:.4f}  background weight {record['mask_background']:.3f}",
        flush=True,
      )
      append_json(args.json, record)
      records.append(record)
  if args.output:
    _write_grid(args.output, driving, output)
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
  parser.add_argument("--motion", choices=("identity", "oracle"), default="identity",
                      help="keypoints: equal (autoencoder) or the heads' true face points")  # fmt: skip
  parser.add_argument("--output", help="directory for grid.png")
  parser.add_argument("--json", help="append one JSON line per evaluation to this file")
  args = parser.parse_args(argv)
  if args.steps < 0 or args.eval_every < 1 or args.eval_heads < 1:
    parser.error("--steps must be >= 0, --eval-every and --eval-heads >= 1")
  return run(args)


if __name__ == "__main__":
  main()
