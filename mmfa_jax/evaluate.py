"""The paper's evaluation protocol: ``python -m mmfa_jax.evaluate``.

    python -m mmfa_jax.evaluate --checkpoint RUN --data ROOT --protocol reconstruction --output OUT
    python -m mmfa_jax.evaluate --checkpoint RUN --data synthetic --protocol cross_identity ...

- ``reconstruction`` (FOMM's protocol): per test video, frame 0 is the source and every frame is
  driven with absolute motion; each generated frame is compared with the real one.
- ``cross_identity``: the first frame of one video (the source identity) driven by another
  identity's video with relative motion (``--pairs CSV`` with ``source,driving`` columns, or a
  deterministic pairing of each video with the next one of another identity). Real videos have no
  ground truth for this, so only FID is computed there (against the driving videos' frames). On
  ``--data synthetic`` the renderer draws the exact target (the source identity with the source's
  pose moved by the driver's change since its first frame, and the driver's expression), so every
  metric is computed against it.

Generated frames are written as 8-bit PNG (``OUT/frames/<video>/<index:07d>.png``) and every metric
is computed on those saved frames, so anyone can recompute them. ``OUT/grid.png`` shows one frame per
video (the one farthest from the source, up to 8 videos) as source | driver | output, and in
synthetic cross-identity | target (the renderer's exact target; in reconstruction the driver is the
target, and real cross-identity pairs have none). ``OUT/metrics.json`` holds the
averages over all evaluated frames, the copy-the-source baseline (the source image as the
prediction of every frame: the floor any model must beat), in reconstruction ``self_reconstruction``
(the scores of frame 0 alone, the source driven by itself: what the appearance path reaches with no
motion to estimate, a ceiling for the rest), counts and the SHA-256 of the metric
networks' weights; ``OUT/table.md`` the paper's Table 1 layout with the columns it can fill.
LPIPS and FID need converted weights (``tools/convert_torch_weights.py lpips|inception``), AKD a
landmark detector (``--landmarks``: for the synthetic heads, ``configs/synthetic_landmarks.py``'s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mmfa_jax import cli
from mmfa_jax.data.evaluation import (
  Item,
  default_pairs,
  pair_stream,
  reconstruction_stream,
  synthetic_items,
)
from mmfa_jax.scoring import Scores, metric_network, padded_batches, pose_reader

PROTOCOLS = ("reconstruction", "cross_identity")
METRICS = ("l1", "psnr", "ssim", "lpips", "akd", "fid")
# The flag that gives each metric needing weights its network.
METRIC_FLAGS = {"lpips": "--lpips", "akd": "--landmarks", "fid": "--inception"}
SYNTHETIC_VIDEOS = 8


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m mmfa_jax.evaluate",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  cli.add_model_arguments(parser)
  parser.add_argument("--data", required=True,
                      help="data set root (videos under ROOT/test: files or frame folders), or "
                      "'synthetic' for held-out synthetic heads")  # fmt: skip
  parser.add_argument("--protocol", choices=PROTOCOLS, default="reconstruction",
                      help="same-identity reconstruction or cross-identity reenactment")  # fmt: skip
  parser.add_argument("--pairs", help="cross_identity: CSV with source,driving columns (video "
                      "names under ROOT/test); default: each video with the next of another "
                      "identity")  # fmt: skip
  parser.add_argument("--metrics", help=f"comma-separated subset of {','.join(METRICS)} (default: "
                      "all whose weights are given)")  # fmt: skip
  parser.add_argument("--num-videos", "--num_videos", type=int,
                      help=f"evaluate the first N videos (synthetic: default {SYNTHETIC_VIDEOS})")  # fmt: skip
  parser.add_argument("--max-frames", "--max_frames", type=int,
                      help="at most F frames per driving video")  # fmt: skip
  parser.add_argument("--lpips", help="converted LPIPS directory (tools/convert_torch_weights.py "
                      "lpips)")  # fmt: skip
  parser.add_argument("--inception", help="converted FID Inception directory "
                      "(tools/convert_torch_weights.py inception)")  # fmt: skip
  parser.add_argument("--landmarks", help="landmark detector directory for AKD (pixels), e.g. "
                      "configs/synthetic_landmarks.py's WORKDIR/landmarks")  # fmt: skip
  parser.add_argument("--edit-degrees", "--edit_degrees", type=float, default=20.0,
                      help="synthetic data: also score yaw/pitch/roll edits by +-this many degrees "
                      "against the renderer (0: off)")  # fmt: skip
  parser.add_argument("--pose-network", "--pose_network",
                      help="synthetic data: read the edits' angles with this converted Hopenet "
                      "directory instead of the model's own pose network, e.g. one pretrained on "
                      "blurred frames (configs/synthetic_pose.py:reader)")  # fmt: skip
  parser.add_argument("--output", required=True,
                      help="output folder: frames/, metrics.json, table.md")  # fmt: skip
  return parser


# --------------------------------------------------------------------------------------------
# What is evaluated


def folder_items(
  root: str, protocol: str, size: int, num_videos: int | None, max_frames: int | None, pairs: Any
) -> Iterator[Item]:
  """Test videos of ``ROOT/test`` (reconstruction) or pairs of them (cross_identity); the folder
  and the pairs are checked here, the videos read as the iterator goes (an unreadable one in
  reconstruction is skipped and counted)."""
  from mmfa_jax.data.evaluation import read_pairs_csv, split_videos

  try:
    videos = split_videos(root)
    chosen = read_pairs_csv(pairs) if protocol == "cross_identity" and pairs else None
  except (OSError, ValueError) as error:
    raise cli.CommandError(str(error)) from None
  if not videos:
    raise cli.CommandError(f"{os.path.join(root, 'test')}: no videos (files or frame folders)")
  by_name = {os.path.basename(v): v for v in videos}
  if protocol == "reconstruction":
    return reconstruction_stream(by_name, sorted(by_name)[:num_videos], size, max_frames)
  chosen = (chosen if pairs else default_pairs(list(by_name)))[:num_videos]
  if not chosen:
    raise cli.CommandError(f"{root}: no pair of videos of different identities to evaluate")
  for name in (n for pair in chosen for n in pair):
    if name not in by_name:
      raise cli.CommandError(f"{pairs}: names {name!r}, not found in {root}/test")
  return pair_stream(by_name, chosen, size, max_frames)


def edit_accuracy(
  animator: Any, size: int, num_videos: int, degrees: float, output: str, read_pose: Any = None
) -> dict[str, dict[str, float]]:
  """Pose edits on held-out synthetic heads, scored against the renderer: for each source and each
  of yaw, pitch, roll, the edit ``angle = model's estimate + delta`` for ``delta = -degrees,
  +degrees`` rendered by the model, and the exact target (the true source motion with the angle
  moved by delta). Per attribute: L1, PSNR, SSIM of edit against target, and
  ``mean_abs_error_deg``, ``|angle(edit) - angle(target)|`` with both angles measured by the
  model's own pose estimate (the frozen Hopenet for MMFA; its bias cancels) or, given, by
  ``read_pose`` (``scoring.pose_reader``); ``copy_source`` holds the same scores of the unedited
  source (an edit that turns nothing), its ``mean_abs_error_deg`` read by the same network; and
  ``output_change``, the mean absolute pixel difference between the edits and the model's render
  at its unedited estimate (near 0: the edit moves nothing; the exact targets differ from the
  source by ``copy_source["l1"]``). The edits are saved
  as ``output/edits/<attribute>/<video>/000000{0,1}.png`` (-delta, +delta) and scored as saved."""
  from mmfa_jax.data.synthetic import HELD_OUT_SEED, SyntheticHeads, render_head
  from mmfa_jax.metrics import image_metrics, mean_finite

  heads = SyntheticHeads(seed=HELD_OUT_SEED, num_videos=num_videos)
  angles = ("yaw", "pitch", "roll")
  deltas = np.asarray([-degrees, degrees], np.float32)
  values = {a: {"l1": [], "psnr": [], "ssim": [], "error": [], "change": []} for a in angles}
  copies = {a: {"l1": [], "psnr": [], "ssim": [], "mean_abs_error_deg": []} for a in angles}
  for video in range(num_videos):
    source = heads.frame(video, 0, size)
    state = animator.encode_source(source)  # once per source, for all its edits
    truth = heads.motion(video, 0)
    for attribute in angles:
      estimate = float(getattr(animator.source_motion(state), attribute)[0])
      angles_rendered = np.append(estimate + deltas, estimate).astype(np.float32)
      keypoints = animator.edit_keypoints(state, **{attribute: angles_rendered})
      edited, unedited_render = np.split(animator.render(state, keypoints), [2])  # (2|1, S, S, 3)
      values[attribute]["change"].append(float(np.mean(np.abs(edited - unedited_render))))
      edited = _save_frames(os.path.join(output, "edits", attribute, f"{video:03d}"), edited)
      targets = np.stack(
        [render_head(heads.identity(video), dict(truth, **{attribute: truth[attribute] + d}), size)
         for d in deltas]
      )  # fmt: skip
      scores = image_metrics(edited, targets)
      unedited = image_metrics(np.stack([source, source]), targets)  # the copy-source floor
      for name in ("l1", "psnr", "ssim"):
        values[attribute][name].extend(np.asarray(scores[name]).tolist())
        copies[attribute][name].extend(np.asarray(unedited[name]).tolist())
      frames = np.concatenate([edited, targets, source[None]])  # (5, S, S, 3)
      if read_pose is None:
        measured = np.asarray(getattr(animator.motion(frames, state), attribute))
      else:
        measured = np.asarray(read_pose(frames)[attribute])
      values[attribute]["error"].extend(np.abs(measured[:2] - measured[2:4]).tolist())
      copies[attribute]["mean_abs_error_deg"].extend(np.abs(measured[4] - measured[2:4]).tolist())
  return {
    attribute: {
      "degrees": float(degrees),
      "mean_abs_error_deg": mean_finite(values[attribute].pop("error")),
      "output_change": mean_finite(values[attribute].pop("change")),
      **{name: mean_finite(v) for name, v in values[attribute].items()},
      "copy_source": {name: mean_finite(v) for name, v in copies[attribute].items()},
    }
    for attribute in angles
  }


# --------------------------------------------------------------------------------------------
# Metrics (the scorers and the metric networks: mmfa_jax/scoring.py)


def chosen_metrics(args: argparse.Namespace, has_targets: bool) -> list[str]:
  """The metrics to compute: ``--metrics`` (checked against the weights given) or every one that
  can be computed."""
  weights = {"lpips": args.lpips, "akd": args.landmarks, "fid": args.inception}
  pixel = ["l1", "psnr", "ssim", "lpips", "akd"]
  if args.metrics:
    wanted = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in METRICS]
    if unknown:
      raise cli.CommandError(f"--metrics: unknown {unknown}; choose from {','.join(METRICS)}")
    for name, directory in weights.items():
      if name in wanted and not directory:
        flag = METRIC_FLAGS[name]
        raise cli.CommandError(f"--metrics {name} needs converted weights: pass {flag} DIR")
  else:
    wanted = [m for m in METRICS if m not in weights or weights[m]]
  if not has_targets:
    dropped = [m for m in wanted if m in pixel]
    if args.metrics and dropped:
      raise cli.CommandError(
        f"cross_identity on real videos has no ground truth: {','.join(dropped)} cannot be "
        "computed (only fid)"
      )
    wanted = [m for m in wanted if m not in pixel]
  if not wanted:
    raise cli.CommandError("no metric to compute (cross_identity on real videos needs --inception)")
  return wanted


# --------------------------------------------------------------------------------------------
# The run


def _save_frames(folder: str, frames: np.ndarray) -> np.ndarray:
  """Writes 8-bit PNGs and returns the frames as read back (what the metrics see)."""
  from mmfa_jax.data.video import read_image, write_image

  os.makedirs(folder, exist_ok=True)
  saved = []
  for index, frame in enumerate(frames):
    path = os.path.join(folder, f"{index:07d}.png")
    write_image(path, frame)
    saved.append(read_image(path))
  return np.stack(saved)


def _grid_row(item: Item, saved: np.ndarray, show_target: bool) -> tuple[np.ndarray, ...]:
  """(source, driver, output[, target]) at the frame whose target (or driver) is farthest from the
  source in mean absolute difference: the frame that shows the most motion. ``show_target``: the
  target is not the driver (cross-identity) and is known (synthetic)."""
  real = item.target if item.target is not None else item.driving  # (T, S, S, 3)
  index = int(np.abs(real - item.source[None]).mean(axis=(1, 2, 3)).argmax())
  row = (item.source, item.driving[index], saved[index])
  return (*row, item.target[index]) if show_target and item.target is not None else row


def save_comparison_grid(path: str, rows: Sequence[tuple[np.ndarray, ...]]) -> None:
  """``rows`` of (source, driver, output[, target]) images as one PNG, a row per video."""
  from mmfa_jax.visualize import sample_grid, save_png

  if not rows:
    return
  names = ("source", "driver", "output", "target")[: len(rows[0])]
  columns = [(name, np.stack([row[c] for row in rows])) for c, name in enumerate(names)]
  save_png(path, sample_grid(columns, max_rows=len(rows)))


def table_markdown(protocol: str, results: dict[str, dict[str, float]]) -> str:
  """The paper's Table 1 layout (reconstruction: L1, PSNR, SSIM, LPIPS, FID; cross-identity: FID,
  and on synthetic data the pixel metrics against the exact target) with what was computed."""
  columns = [("l1", "L1 ↓"), ("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"),
             ("akd", "AKD ↓"), ("fid", "FID ↓")]  # fmt: skip
  title = "Same-identity reconstruction" if protocol == "reconstruction" else "Cross-identity"
  lines = [f"### {title}", "", "| method | " + " | ".join(c[1] for c in columns) + " |",
           "|---|" + "---|" * len(columns)]  # fmt: skip
  for method, values in results.items():
    cells = [f"{values[k]:.4f}" if k in values else "–" for k, _ in columns]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def _check_arguments(args: argparse.Namespace, synthetic: bool) -> None:
  if not synthetic and not os.path.isdir(args.data):
    raise cli.CommandError(f"{args.data}: no such data folder (or pass --data synthetic)")
  if args.pairs and (synthetic or args.protocol != "cross_identity"):
    raise cli.CommandError("--pairs applies to --protocol cross_identity on a data folder")
  if args.pose_network and not synthetic:
    raise cli.CommandError("--pose-network reads pose edits, which --data synthetic scores")
  if args.pairs and not os.path.isfile(args.pairs):
    raise cli.CommandError(f"{args.pairs}: no such pairs file")
  for flag, value in (("--num-videos", args.num_videos), ("--max-frames", args.max_frames)):
    if value is not None and value < 1:
      raise cli.CommandError(f"{flag} must be at least 1, got {value}")


def edits_markdown(edits: dict[str, dict[str, float]]) -> str:
  """The pose-edit accuracy table (``edit_accuracy``), or nothing."""
  if not edits:
    return ""
  degrees = next(iter(edits.values()))["degrees"]
  lines = ["", f"### Pose edits (±{degrees:g}°, synthetic)", "",
           "| attribute | angle error (deg) ↓ | copy source angle error | L1 ↓ | PSNR ↑ | SSIM ↑ "
           "| copy source PSNR | output change (L1) | target change (L1) |",
           "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
  for name, v in edits.items():
    copy = v["copy_source"]
    cells = (f"{v['mean_abs_error_deg']:.2f} | {copy['mean_abs_error_deg']:.2f} | {v['l1']:.4f} | "
             f"{v['psnr']:.2f} | {v['ssim']:.4f}")  # fmt: skip
    change = f"{v['output_change']:.4f} | {copy['l1']:.4f}"
    lines.append(f"| {name} | {cells} | {copy['psnr']:.2f} | {change} |")
  return "\n".join(lines) + "\n"


# What an earlier evaluation wrote in its output folder (the only things an evaluation replaces).
_OUTPUT_ENTRIES = {"frames", "edits", "metrics.json", "table.md", "grid.png"}
GRID_ROWS = 8


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
  """Runs the protocol (module docstring) and writes ``OUT``; returns the metrics.json dict.

  Everything is written to a staging folder beside ``OUT`` and moved into place at the end: an
  interrupted or failed evaluation leaves no partial output (an earlier evaluation's ``OUT``
  stays until the new one is complete)."""
  from mmfa_jax.atomic import staged

  final = args.output
  if os.path.isfile(final):
    raise cli.CommandError(f"{final}: is a file; --output is a folder")
  problem = cli.output_folder_problem(final)
  if problem:
    raise cli.CommandError(problem)
  if os.path.isdir(final) and set(os.listdir(final)) - _OUTPUT_ENTRIES:
    other = sorted(set(os.listdir(final)) - _OUTPUT_ENTRIES)[0]
    raise cli.CommandError(
      f"{final}: a folder holding more than an evaluation ({other!r}...); name a new or empty "
      "folder, or an earlier evaluation's"
    )
  try:
    with staged(final) as staging:
      os.makedirs(staging)
      args.output = staging
      return _evaluate(args)
  finally:
    args.output = final


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
  synthetic = args.data == "synthetic"
  _check_arguments(args, synthetic)
  wanted = chosen_metrics(args, synthetic or args.protocol == "reconstruction")
  networks = {"lpips": args.lpips, "inception": args.inception, "landmarks": args.landmarks}
  loaded = {k: metric_network(k, d) for k, d in networks.items() if d and _uses(k, wanted)}
  animator = cli.load_animator(args)
  size = animator.image_size
  read_pose = None
  if args.pose_network:
    try:
      read_pose = pose_reader(args.pose_network, animator.model_config)
    except (ValueError, OSError) as error:  # ConvertedWeightsError is a ValueError
      raise cli.CommandError(f"--pose-network: {error}") from None
  if synthetic:
    items = synthetic_items(
      args.protocol, size, args.num_videos or SYNTHETIC_VIDEOS, args.max_frames
    )
  else:
    items = folder_items(
      args.data, args.protocol, size, args.num_videos, args.max_frames, args.pairs
    )
  lpips_fn, inception_fn, landmarks_fn = (
    padded_batches(loaded[k][0], args.batch_size) if k in loaded else None
    for k in ("lpips", "inception", "landmarks")
  )
  reconstruction = args.protocol == "reconstruction"
  scores = Scores(wanted, lpips_fn, inception_fn, args.batch_size, reconstruction, landmarks_fn)
  mode = "absolute" if reconstruction else "relative"
  counts = {"videos": 0, "frames": 0, "skipped_videos": 0}
  grid_rows: list[tuple[np.ndarray, ...]] = []
  for item in _progress(items):
    if item.source is None:
      counts["skipped_videos"] += 1
      continue
    generated = np.stack(list(animator.iter_animate(item.source, item.driving, mode=mode)))
    saved = _save_frames(os.path.join(args.output, "frames", item.name), generated)
    scores.add(item, saved)
    if len(grid_rows) < GRID_ROWS:
      grid_rows.append(_grid_row(item, saved, show_target=not reconstruction))
    counts["videos"] += 1
    counts["frames"] += len(saved)
  if counts["frames"] == 0:
    raise cli.CommandError(f"{args.data}: no readable video to evaluate")
  result = {
    **scores.summary(),
    "counts": counts,
    "protocol": args.protocol,
    "mode": mode,
    "data": "synthetic" if synthetic else os.path.abspath(args.data),
    "checkpoint": os.path.abspath(args.checkpoint),
    "weights": {k: sha for k, (_, sha) in loaded.items()},
    "notes": "per-frame values averaged over all frames; an exact frame's PSNR counts as 100 dB",
  }
  save_comparison_grid(os.path.join(args.output, "grid.png"), grid_rows)
  if synthetic and args.edit_degrees > 0:
    videos = args.num_videos or SYNTHETIC_VIDEOS
    result["edits"] = edit_accuracy(
      animator, size, videos, args.edit_degrees, args.output, read_pose
    )
    result["edit_angles_read_by"] = (
      os.path.abspath(args.pose_network) if args.pose_network else "model"
    )
  _write_results(args.output, args.protocol, result)
  return result


def _progress(items: Iterator[Item]) -> Iterator[Item]:
  """``items`` with a progress bar counting driving frames."""
  from tqdm import tqdm

  with tqdm(desc="evaluate", unit="frame", dynamic_ncols=True) as progress:
    for item in items:
      yield item
      progress.update(0 if item.driving is None else len(item.driving))


def _write_results(output: str, protocol: str, result: dict[str, Any]) -> None:
  """``metrics.json`` and ``table.md`` (printed too)."""
  with open(os.path.join(output, "metrics.json"), "w") as handle:
    json.dump(result, handle, indent=2, sort_keys=True)
  rows = {"mmfa_jax": result["metrics"], "copy source": result["baselines"]["copy_source"]}
  if "self_reconstruction" in result:
    rows["mmfa_jax, frame 0 (source driven by itself)"] = result["self_reconstruction"]
  table = table_markdown(protocol, rows) + edits_markdown(result.get("edits", {}))
  with open(os.path.join(output, "table.md"), "w") as handle:
    handle.write(table)
  print(table, end="")


def _uses(network: str, wanted: Sequence[str]) -> bool:
  return {"lpips": "lpips", "landmarks": "akd", "inception": "fid"}[network] in wanted


def main(argv: list[str] | None = None) -> int:
  return cli.run(evaluate, build_parser(), argv)


if __name__ == "__main__":
  sys.exit(main())
