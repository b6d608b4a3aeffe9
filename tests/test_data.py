"""Synthetic heads, frame readers, augmentation and the grain pipeline (on files made here)."""

import colorsys
import itertools
import os

import numpy as np
import pytest
from PIL import Image
from tool_runner import run_tool

from mmfa_jax.data import augment
from mmfa_jax.data.pipeline import (
  ProcessBatchSlice,
  SyntheticSource,
  VideoFolderSource,
  index_dataset,
  train_dataset,
)
from mmfa_jax.data.synthetic import EXPRESSIONS, SyntheticHeads
from mmfa_jax.data.video import FrameReadError, count_frames, read_frames, read_image


def test_synthetic_heads_are_deterministic_and_move():
  heads = SyntheticHeads(seed=3, num_videos=4, num_frames=16)
  again = SyntheticHeads(seed=3, num_videos=4, num_frames=16)
  frame = heads.frame(1, 5, 64)
  assert frame.shape == (64, 64, 3) and frame.dtype == np.float32
  assert 0.0 <= frame.min() and frame.max() <= 1.0
  np.testing.assert_array_equal(frame, again.frame(1, 5, 64))
  assert np.abs(frame - heads.frame(1, 9, 64)).mean() > 0.005  # motion changes the image
  assert np.abs(frame - heads.frame(2, 5, 64)).mean() > 0.02  # identities differ
  motion = heads.motion(1, 5)
  assert set(motion) == {"yaw", "pitch", "roll", "tx", "ty", "scale", *EXPRESSIONS}
  yaws = [heads.motion(0, f)["yaw"] for f in range(16)]
  assert max(yaws) - min(yaws) > 5 and max(abs(y) for y in yaws) <= 35
  assert max(abs(a - b) for a, b in itertools.pairwise(yaws)) < 8  # smooth


def test_yaw_moves_the_face_sideways():
  """Turning the head (+yaw rotates +x towards -z) shifts the dark eye pixels in x."""
  heads = SyntheticHeads(seed=0, num_videos=1, num_frames=8)
  from mmfa_jax.data.synthetic import Identity, render_head

  identity = Identity(
    (0.5, 0.62, 0.45), (0.8, 0.5, 0.3), (0.05, 0.05, 0.05), (0.7, 0.1, 0.2), (0.0, 0.0, 0.1)
  )

  base = dict(
    heads.motion(0, 0), yaw=0.0, pitch=0.0, roll=0.0, tx=0.0, ty=0.0, scale=1.0, blink=0.0
  )
  centres = []
  for yaw in (-30.0, 0.0, 30.0):
    image = render_head(identity, dict(base, yaw=yaw), 96)
    white = (image.min(-1) > 0.6).astype(float)  # the eye whites (skin and background are darker)
    _, xs = np.nonzero(white)
    centres.append(xs.mean())
  # +yaw turns the face towards +x (the rotation maps the face's +z normal to +x sin(yaw)).
  assert centres[0] < centres[1] - 3 and centres[2] > centres[1] + 3, centres


def test_face_points_lie_on_the_painted_features():
  """``face_points``: hand-computed at yaw 90 degrees, and in rendered frames of moving heads the
  pupil points fall on pupil-coloured pixels (the renderer paints them, the points are computed
  from the same geometry in closed form)."""
  from mmfa_jax.data.synthetic import FACE_POINTS, Identity, face_points, render_head

  identity = Identity(
    (0.5, 0.6, 0.4), (0.8, 0.5, 0.3), (0.02, 0.02, 0.02), (0.7, 0.1, 0.2), (0.2, 0.6, 0.9)
  )
  still = dict(yaw=0.0, pitch=0.0, roll=0.0, tx=0.0, ty=0.0, scale=1.0)
  nose = [n for n, _, _ in FACE_POINTS].index("nose")
  at_rest = face_points(identity, still)[nose]
  # u 0, v 0.12: (0, 0.12 * 0.6, 0.4 * sqrt(1 - 0.12^2)).
  np.testing.assert_allclose(at_rest, [0, 0.072, 0.4 * np.sqrt(1 - 0.0144)], atol=1e-6)
  turned = face_points(identity, dict(still, yaw=90.0, tx=0.1, scale=2.0))[nose]
  # R_yaw(90) maps (x, y, z) to (z, y, -x); then scale 2 and x + 0.1.
  np.testing.assert_allclose(turned, [2 * at_rest[2] + 0.1, 2 * at_rest[1], 0], atol=1e-6)

  heads = SyntheticHeads(seed=3, num_videos=4, num_frames=64)
  size, hits = 128, 0
  for video in range(4):
    for frame in (0, 21, 42):
      motion = dict(heads.motion(video, frame), blink=0.0)
      image = render_head(identity, motion, size)
      for name in ("left_pupil", "right_pupil"):
        x, y, _ = face_points(identity, motion)[[n for n, _, _ in FACE_POINTS].index(name)]
        column, row = ((np.array([x, y]) + 1) * size / 2).astype(int)  # the pixel it lies in
        hits += bool(image[row, column].max() < 0.1)  # the pupils' colour, shaded
  assert hits == 24


def test_image_modes_convert(tmp_path):
  rgb = (np.random.default_rng(0).random((6, 5, 3)) * 255).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / "rgb.png")
  Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
  Image.fromarray(np.concatenate([rgb, np.full((6, 5, 1), 7, np.uint8)], -1)).save(
    tmp_path / "rgba.png"
  )
  sixteen = rgb[..., 0].astype(np.uint16) * 257
  Image.fromarray(sixteen).save(tmp_path / "deep.png")
  np.testing.assert_allclose(read_image(str(tmp_path / "rgb.png")), rgb / 255, atol=1e-6)
  np.testing.assert_allclose(read_image(str(tmp_path / "rgba.png")), rgb / 255, atol=1e-6)
  gray = read_image(str(tmp_path / "gray.png"))
  np.testing.assert_allclose(gray[..., 2], rgb[..., 0] / 255, atol=1e-6)
  np.testing.assert_allclose(
    read_image(str(tmp_path / "deep.png"))[..., 1], sixteen / 65535, atol=1e-6
  )
  (tmp_path / "text.png").write_text("not an image")
  with pytest.raises(FrameReadError, match=r"text\.png: not a readable image"):
    read_image(str(tmp_path / "text.png"))


def test_color_jitter_hand_cases():
  image = np.random.default_rng(1).random((4, 4, 3)).astype(np.float32)
  np.testing.assert_allclose(augment.adjust_brightness(image, 0.5), image * 0.5)
  np.testing.assert_allclose(
    augment.adjust_saturation(image, 0.0)[..., 0], (image @ [0.299, 0.587, 0.114]), atol=1e-6
  )
  np.testing.assert_allclose(augment.adjust_hue(image, 0.0), image, atol=1e-6)
  shifted = augment.adjust_hue(image, 0.1)
  for pixel, got in zip(image.reshape(-1, 3), shifted.reshape(-1, 3)):
    h, s, v = colorsys.rgb_to_hsv(*pixel)
    np.testing.assert_allclose(got, colorsys.hsv_to_rgb((h + 0.1) % 1, s, v), atol=1e-5)


def test_pair_augmentation_flips_both_or_swaps():
  source = np.random.default_rng(2).random((8, 8, 3)).astype(np.float32)
  driving = np.random.default_rng(3).random((8, 8, 3)).astype(np.float32)
  outcomes = set()
  for seed in range(40):
    a, b = augment.augment_pair(source, driving, np.random.default_rng(seed), jitter=0.0)
    if np.allclose(a, driving, atol=1e-5) and np.allclose(b, source, atol=1e-5):
      outcomes.add("swap")
    elif np.allclose(a, source[:, ::-1], atol=1e-5) and np.allclose(b, driving[:, ::-1], atol=1e-5):
      outcomes.add("flip")
    elif np.allclose(a, source, atol=1e-5) and np.allclose(b, driving, atol=1e-5):
      outcomes.add("none")
    else:
      raise AssertionError(f"seed {seed}: neither a swap, a flip nor unchanged")
  assert outcomes == {"swap", "flip", "none"}


def test_synthetic_pipeline_batches_resume_and_workers():
  source = SyntheticSource(SyntheticHeads(seed=0, num_videos=6, num_frames=8))
  dataset = train_dataset(
    source, image_size=32, batch_size=4, seed=1, process_index=0, process_count=1
  )
  iterator = iter(dataset)
  first = next(iterator)
  assert first["source"].shape == (4, 32, 32, 3) and first["driving"].dtype == np.float32
  assert first["skipped"].tolist() == [0, 0, 0, 0]
  next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = iter(
    train_dataset(source, image_size=32, batch_size=4, seed=1, process_index=0, process_count=1)
  )
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["source"], expected["source"])
  with_workers = iter(
    train_dataset(
      source, image_size=32, batch_size=4, seed=1, process_index=0, process_count=1, worker_count=2
    )
  )
  np.testing.assert_array_equal(next(with_workers)["driving"], first["driving"])


def test_two_processes_read_disjoint_rows_of_the_same_global_batches():
  num_items, global_batch = 12, 4
  order = index_dataset(num_items, seed=5)
  epoch = sorted(int(order[i]) for i in range(num_items))
  assert epoch == list(range(num_items))
  parts = [ProcessBatchSlice(order, global_batch, p, 2) for p in (0, 1)]
  for batch in range(3):
    rows = [[int(part[batch * 2 + r]) for r in range(2)] for part in parts]
    assert not set(rows[0]) & set(rows[1])
    expected = [int(order[batch * global_batch + r]) for r in range(global_batch)]
    assert rows[0] + rows[1] == expected
  source = SyntheticSource(SyntheticHeads(seed=0, num_videos=5, num_frames=8))
  kwargs = dict(image_size=16, batch_size=4, seed=2, augment=True, read_threads=1, prefetch=2)
  whole = next(iter(train_dataset(source, process_index=0, process_count=1, **kwargs)))
  halves = [
    next(iter(train_dataset(source, process_index=p, process_count=2, **kwargs))) for p in (0, 1)
  ]
  for key in ("source", "driving"):
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def _write_mp4(path, frames, fps=25):
  import av

  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def test_video_folder_source_with_broken_entries(tmp_path):
  train = tmp_path / "train"
  train.mkdir()
  ramp = np.linspace(0, 1, 48)
  smooth = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 0.5 + 0 * ramp[None, :]), -1)
  frames = np.stack([(0.2 + 0.6 * np.roll(smooth, i, axis=-1)) * 255 for i in range(5)]).astype(
    np.uint8
  )
  folder = train / "id00001#vidA#0#5.mp4"  # a frame folder whose name ends in .mp4
  folder.mkdir()
  for i, frame in enumerate(frames):
    Image.fromarray(frame).save(folder / f"{i:07d}.png")
  _write_mp4(train / "id00001#vidB.mp4", frames)
  Image.fromarray(frames[0]).save(
    train / "id00002#gif.gif", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]]
  )
  (train / "id00003#broken.mp4").write_bytes(os.urandom(2048))
  (train / "notes.txt").write_text("ignored")

  source = VideoFolderSource(str(tmp_path), "train")
  assert source.identities == ["id00001", "id00002", "id00003"]
  assert len(source[0]["videos"]) == 2
  assert count_frames(str(folder)) == 5 and count_frames(str(train / "id00001#vidB.mp4")) == 5
  assert count_frames(str(train / "id00002#gif.gif")) == 5
  np.testing.assert_allclose(read_frames(str(folder), [3])[0], frames[3] / 255, atol=1e-6)
  decoded = read_frames(str(train / "id00001#vidB.mp4"), [4, 1])
  assert (
    decoded[0].shape == (48, 48, 3) and np.abs(decoded[1] - frames[1] / 255).mean() < 0.08
  )  # lossy
  with pytest.raises(FrameReadError, match=r"broken\.mp4"):
    count_frames(str(train / "id00003#broken.mp4"))

  dataset = train_dataset(
    source, image_size=32, batch_size=3, seed=0, process_index=0, process_count=1
  )
  skipped = sum(int(batch["skipped"].sum()) for _, batch in zip(range(6), iter(dataset)))
  assert skipped > 0  # the broken video was drawn, skipped, counted, and training data kept flowing

  empty = tmp_path / "empty"
  (empty / "train").mkdir(parents=True)
  with pytest.raises(ValueError, match="no videos"):
    VideoFolderSource(str(empty), "train")
  with pytest.raises(FileNotFoundError, match="no such folder"):
    VideoFolderSource(str(tmp_path), "test")
  unreadable = tmp_path / "unreadable" / "train"  # every video broken: refused at start
  unreadable.mkdir(parents=True)
  (unreadable / "id01#a.mp4").write_bytes(os.urandom(2048))
  (unreadable / "id02#b.mp4").write_bytes(b"")
  (unreadable / "id03#c").mkdir()  # a frame folder without frames
  with pytest.raises(
    ValueError, match=r"none of its 3 videos could be read \(first: .*id01#a\.mp4"
  ):
    VideoFolderSource(str(tmp_path / "unreadable"), "train")


def test_global_batch_is_sharded_on_the_data_axis():
  import jax
  from jax.sharding import AxisType

  from mmfa_jax.data.pipeline import global_batch

  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  local = {"source": np.arange(8 * 2 * 2 * 3, dtype=np.float32).reshape(8, 2, 2, 3)}
  batch = global_batch(local, mesh)
  assert batch["source"].shape == (8, 2, 2, 3)
  assert batch["source"].sharding.spec[0] == "data"
  assert len(batch["source"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(batch["source"]), local["source"])


def test_arrayrecord_build_and_pipeline(tmp_path):
  from mmfa_jax.data.arrayrecord import ArrayRecordSource

  root = tmp_path / "root"
  rng = np.random.default_rng(6)
  for split, names in (("train", ["id01#a", "id01#b", "id02#c"]), ("test", ["id09#z"])):
    for name in names:
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(4):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(
          folder / f"{i:03d}.png"
        )
  (root / "train" / "id03#broken.mp4").write_bytes(os.urandom(1024))
  result = run_tool(
    "build_dataset.py", "--input", root, "--output", tmp_path / "built", "--image_size", 32
  )
  assert result.returncode == 0, result.stderr
  assert "train: 3 videos, 2 identities, 12 frames" in result.stdout
  assert "skipped (unreadable):" in result.stdout and "broken.mp4" in result.stdout
  data_dir = result.stdout.split("built ")[1].split()[0]
  source = ArrayRecordSource(data_dir, "train")
  assert len(source) == 2 and sorted(len(source[i]["records"]) for i in range(2)) == [1, 2]
  batch = next(
    iter(
      train_dataset(source, image_size=32, batch_size=2, seed=0, process_index=0, process_count=1)
    )
  )
  assert batch["source"].shape == (2, 32, 32, 3) and batch["skipped"].sum() == 0
  assert len(ArrayRecordSource(data_dir, "test")) == 1
  with pytest.raises(ValueError, match="no split 'val'"):
    ArrayRecordSource(data_dir, "val")
  bad = run_tool("build_dataset.py", "--input", tmp_path / "nothing", "--output", tmp_path / "b2")
  assert bad.returncode == 2 and "no train/ or test/ folder" in bad.stderr


@pytest.mark.parametrize("content", ["corrupt", "empty"])
def test_build_dataset_refuses_a_split_with_no_readable_video(tmp_path, content):
  root = tmp_path / "root dir é"  # a space and a non-ASCII name in the path
  (root / "train").mkdir(parents=True)
  if content == "corrupt":
    (root / "train" / "id01#only.mp4").write_bytes(os.urandom(2048))
  output = tmp_path / "built"
  result = run_tool("build_dataset.py", "--input", root, "--output", output, "--image_size", 32)
  assert result.returncode == 2, result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
  want = (
    "none of its 1 videos could be read (first: id01#only.mp4)"
    if content == "corrupt"
    else ("no videos")
  )
  assert str(root / "train") in errors[0] and want in errors[0], errors[0]
  assert not output.exists()  # nothing half-written


def test_evaluation_iteration(tmp_path):
  from mmfa_jax.data.evaluation import cross_identity_pairs, read_pairs_csv, reconstruction_videos

  heads = SyntheticHeads(seed=1, num_videos=3, num_frames=5)
  for video in range(3):
    folder = tmp_path / "test" / f"id{video}#clip.mp4"
    folder.mkdir(parents=True)
    for frame in range(5):
      Image.fromarray((heads.frame(video, frame, 32) * 255).astype(np.uint8)).save(
        folder / f"{frame:07d}.png"
      )
  (tmp_path / "test" / "id9#broken.mp4").write_bytes(b"junk")
  videos = list(reconstruction_videos(str(tmp_path), 32))
  assert [name for name, _ in videos] == ["id0#clip.mp4", "id1#clip.mp4", "id2#clip.mp4"]
  np.testing.assert_allclose(videos[1][1][3], heads.frame(1, 3, 32), atol=1 / 255)
  (tmp_path / "pairs.csv").write_text("source,driving\nid0#clip.mp4,id2#clip.mp4\n")
  pairs = list(cross_identity_pairs(str(tmp_path), str(tmp_path / "pairs.csv"), 32))
  assert (
    len(pairs) == 1 and pairs[0][2].shape == (32, 32, 3) and pairs[0][3].shape == (5, 32, 32, 3)
  )
  (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
  with pytest.raises(ValueError, match="needs 'source' and 'driving'"):
    read_pairs_csv(str(tmp_path / "bad.csv"))


def test_make_source_from_config(tmp_path):
  from configs import vox
  from mmfa_jax.data.pipeline import make_source

  data = vox.get_config().data
  with pytest.raises(ValueError, match=r"config\.data\.root is not set"):
    make_source(data)
  data.source = "synthetic"
  data.synthetic.num_videos = 5
  assert len(make_source(data)) == 5
  data.source = "folders"
  data.root = str(tmp_path)
  with pytest.raises(FileNotFoundError, match="no such folder"):
    make_source(data)
  data.source = "webdataset"
  with pytest.raises(ValueError, match="must be synthetic, folders or arrayrecord"):
    make_source(data)


def test_prepare_videos_crops_faces(tmp_path):
  from skimage import data as skdata

  from mmfa_jax.data.faces import square_crop

  # union (10, 20)-(50, 60): side 40 * 1.5 = 60 about the centre (30, 40)
  assert square_crop([(10, 20, 30, 40), (20, 30, 30, 30)], 100, 120, 0.25) == (0, 10, 60)
  assert square_crop([(0, 0, 90, 90)], 100, 120, 0.25) == (0, 0, 100)  # clipped to the frame

  photo = skdata.astronaut()  # a real face, shipped inside scikit-image
  frames = []
  for shift in range(18):  # the photo pans slowly to the right
    canvas = np.zeros((320, 480, 3), np.uint8)
    canvas[:, 40 + shift : 40 + shift + 320] = photo[:320, 96:416]
    frames.append(canvas)
  videos = tmp_path / "in"
  videos.mkdir()
  _write_mp4(videos / "talk.mp4", np.stack(frames))
  _write_mp4(videos / "empty_scene.mp4", np.zeros((18, 64, 64, 3), np.uint8))
  _write_mp4(videos / "short.mp4", np.stack(frames[:4]))
  (videos / "broken.mov").write_bytes(b"junk")
  result = run_tool(
    "prepare_videos.py", "--input", videos, "--output", tmp_path / "root", "--size", 64
  )
  assert result.returncode == 0, result.stderr
  assert "wrote 1 of 4 clips" in result.stdout
  assert "empty_scene.mp4: no face found" in result.stdout
  assert "short.mp4: too short" in result.stdout and "broken.mov: unreadable" in result.stdout
  clip = tmp_path / "root" / "train" / "talk.mp4"
  assert len(os.listdir(clip)) == 18
  first = read_image(str(clip / "0000000.png"))
  assert first.shape == (64, 64, 3) and first.mean() > 0.15  # a face crop, not the black border
  source = VideoFolderSource(str(tmp_path / "root"), "train")
  assert source.identities == ["talk.mp4"]
