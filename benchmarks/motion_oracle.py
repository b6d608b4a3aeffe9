"""Where a synthetic run's reconstruction error comes from: the motion or the rendering.

Three measurements on the held-out synthetic heads (README, "Where the reconstruction error comes
from"), each printed as one table row and, with ``--json``, appended as one JSON line:

- ``renderer``: what each motion component is worth. The renderer's own frames with one group of
  the true motion (scale; translation x, y; rotation yaw, pitch, roll; the expression
  coefficients) replaced by frame 0's, scored (PSNR, dB) against the true frame; ``copy`` replaces
  all of them (copying the source). Needs no model.
- ``oracle`` (``--checkpoint``): the run's reconstruction (frame 0 drives every frame, absolute
  motion) driven with its own motion, then with the true scale (its frame-0 scale times the true
  ratio), the true translation (its frame-0 translation plus the true shift), both, and with no
  scale change at all.
- ``masks`` (``--checkpoint``): the dense motion's background-slot weight (the identity warp) and
  the occlusion map, averaged over the pixels where the frame differs from the source (by more than
  0.1 in some channel) and over the others.

  python benchmarks/motion_oracle.py [--checkpoint RUN] [--num-videos 8] [--raw-weights]
      [--json OUT.jsonl]
"""

from __future__ import annotations

import argparse

import numpy as np
from _measure import append_json

FRAMES = 64  # per held-out head
MOTION_GROUPS = {
  "scale": ("scale",),
  "translation": ("tx", "ty"),
  "rotation": ("yaw", "pitch", "roll"),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR (dB) of images in [0, 1], capped at 100."""
  return float(min(100.0, -10 * np.log10(max(float(np.mean((a - b) ** 2)), 1e-10))))


def renderer_worth(num_videos: int, size: int) -> dict[str, float]:
  """Mean PSNR of the true frames 1, 4, ..., 61 against the same frames with one motion group at
  frame 0's value (``copy``: every group)."""
  from mmfa_jax.data.synthetic import EXPRESSIONS, HELD_OUT_SEED, SyntheticHeads, render_head

  groups = dict(MOTION_GROUPS, expression=tuple(EXPRESSIONS))
  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=num_videos, num_frames=FRAMES)
  scores: dict[str, list[float]] = {"copy": [], **{g: [] for g in groups}}
  for video in range(num_videos):
    identity, first = heads.identity(video), heads.motion(video, 0)
    for frame in range(1, FRAMES, 3):
      motion = heads.motion(video, frame)
      target = render_head(identity, motion, size)
      scores["copy"].append(psnr(target, render_head(identity, first, size)))
      for group, names in groups.items():
        frozen = dict(motion, **{n: first[n] for n in names})
        scores[group].append(psnr(target, render_head(identity, frozen, size)))
  return {name: float(np.mean(v)) for name, v in scores.items()}


def oracle_motion(animator, num_videos: int) -> dict[str, float]:
  """Mean reconstruction PSNR (every second frame) with the run's motion and with its scale or
  translation replaced by the truth (module docstring)."""
  import jax.numpy as jnp

  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads

  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=num_videos, num_frames=FRAMES)
  size, indices = animator.image_size, list(range(0, FRAMES, 2))
  scores: dict[str, list[float]] = {}
  for video in range(num_videos):
    frames = np.stack([heads.frame(video, f, size) for f in indices])  # (F, S, S, 3)
    state = animator.encode_source(frames[0])
    motion = animator.motion(frames, state)
    truth = [heads.motion(video, f) for f in indices]
    ratio = np.array([t["scale"] / truth[0]["scale"] for t in truth], np.float32)  # (F,)
    shift = np.array([[t["tx"] - truth[0]["tx"], t["ty"] - truth[0]["ty"], 0.0] for t in truth])
    scale0, translation0 = np.asarray(motion.scale)[0], np.asarray(motion.translation)[0]
    true_scale, true_translation = scale0 * ratio, (translation0[None] + shift).astype(np.float32)
    options = {
      "model": (motion.scale, motion.translation),
      "true_scale": (true_scale, motion.translation),
      "true_translation": (motion.scale, true_translation),
      "both": (true_scale, true_translation),
      "no_scale_change": (np.full_like(ratio, scale0), motion.translation),
    }
    canonical = jnp.repeat(state["motion"]["canonical_kp"], len(indices), 0)  # (F, K, 3)
    for name, (scale, translation) in options.items():
      keypoints = animator.variant.keypoints(
        canonical, motion.rotation, jnp.asarray(translation), jnp.asarray(scale),
        motion.expression_deformation,
      )  # fmt: skip
      rendered = animator.render(state, keypoints)
      scores.setdefault(name, []).extend(psnr(r, f) for r, f in zip(rendered, frames, strict=True))
  return {name: float(np.mean(v)) for name, v in scores.items()}


def mask_weights(animator, num_videos: int) -> dict[str, float]:
  """The background-slot weight and the occlusion on moving and still pixels (frames 8, 16, ...,
  56 driven from frame 0), at the dense motion's resolution."""
  import jax
  import jax.numpy as jnp

  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads

  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=num_videos, num_frames=FRAMES)
  size = animator.image_size
  render = jax.jit(
    lambda v, s, k: animator.model.apply(v, s, k, method=lambda m, s, k: m.render(s, k))
  )
  values: dict[str, list[float]] = {k: [] for k in ("moving", "still", "occlusion_moving",
                                                      "occlusion_still")}  # fmt: skip
  for video in range(num_videos):
    frames = np.stack([heads.frame(video, f, size) for f in range(0, FRAMES, 8)])  # (8, S, S, 3)
    state = animator.encode_source(frames[0])
    out = render(animator.variables, state, jnp.asarray(animator.motion(frames, state).kp))
    background = np.asarray(out["mask"], np.float32)[..., 0].mean(axis=1)  # (8, h, h)
    h = background.shape[1]
    moving = np.abs(frames - frames[0]).max(-1) > 0.1  # (8, S, S)
    moving = moving.reshape(len(frames), h, size // h, h, size // h).mean((2, 4)) > 0.5
    occlusion = out.get("occlusion_map")
    if occlusion is not None:
      occlusion = np.asarray(occlusion, np.float32).mean(-1)  # (8, H', W')
      factor = occlusion.shape[1] // h
      occlusion = occlusion.reshape(len(frames), h, factor, h, factor).mean((2, 4))
    for i in range(1, len(frames)):
      if moving[i].any() and (~moving[i]).any():
        values["moving"].append(background[i][moving[i]].mean())
        values["still"].append(background[i][~moving[i]].mean())
        if occlusion is not None:
          values["occlusion_moving"].append(occlusion[i][moving[i]].mean())
          values["occlusion_still"].append(occlusion[i][~moving[i]].mean())
  return {name: float(np.mean(v)) for name, v in values.items() if v}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--checkpoint", help="a synthetic training run (its workdir)")
  parser.add_argument("--num-videos", type=int, default=8)
  parser.add_argument("--size", type=int, default=64, help="renderer table without --checkpoint")
  parser.add_argument("--raw-weights", action="store_true", help="not the parameter average")
  parser.add_argument("--json", help="append the results as JSON lines to this file")
  args = parser.parse_args()
  animator = None
  if args.checkpoint:
    from mmfa_jax.inference import Animator

    animator = Animator.from_checkpoint(args.checkpoint, averaged=not args.raw_weights)
  size = animator.image_size if animator else args.size
  results = {"renderer": renderer_worth(args.num_videos, size)}
  if animator is not None:
    results["oracle"] = oracle_motion(animator, args.num_videos)
    results["masks"] = mask_weights(animator, args.num_videos)
  for name, row in results.items():
    print(f"{name:9s}" + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    if args.json:
      append_json(args.json, {"measurement": name, "checkpoint": args.checkpoint, **row})


if __name__ == "__main__":
  main()
