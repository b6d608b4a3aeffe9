"""The animate, edit and interpolate commands on small random models and media made here: outputs
equal the Python API's frames, frame count, exact frame rate and audio are kept, the face crop is
pasted back, and every bad input gives its one-line message and exit status 2 with no output."""

import os
from fractions import Fraction

import av
import jax.numpy as jnp
import numpy as np
import pytest
from model_helpers import random_vae, random_variables, save_training_run
from PIL import Image
from tool_runner import ROOT

from configs import synthetic
from mmfa_jax import animate, edit, interpolate
from mmfa_jax.checkpoints import save_converted
from mmfa_jax.data.faces import FaceCrop, feather_mask, find_face_crop
from mmfa_jax.data.video import iter_frames, probe, read_image
from mmfa_jax.inference import Animator
from mmfa_jax.models import Hopenet, animation_model_from_config
from mmfa_jax.models.motion import zero_head_pose

SIZE = 64
NTSC = Fraction(30000, 1001)
AUDIO_RATE = 16000


def _model_variables(config, seed):
  image = jnp.zeros((1, SIZE, SIZE, 3))
  poses = (zero_head_pose(1), zero_head_pose(1))  # MMFA's frozen Hopenet head poses: inputs
  model = animation_model_from_config(config.model)
  return random_variables(model, image, image, seed=seed, head_poses=poses)


@pytest.fixture(scope="module")
def fv2v_dir(tmp_path_factory):
  """A converted face_vid2vid directory of a random tiny model (as the converter writes it)."""
  config = synthetic.get_config("tiny:face_vid2vid")
  config.model.num_kp = 6  # adapt-scale's 3D convex hull needs 4 or more
  directory = tmp_path_factory.mktemp("commands") / "fv2v"
  save_converted(
    directory,
    {"model": _model_variables(config, 0)},
    {"kind": "face_vid2vid", "model_config": config.model.to_json(), "image_size": SIZE},
  )
  return str(directory)


@pytest.fixture(scope="module")
def animator(fv2v_dir):
  return Animator.from_checkpoint(fv2v_dir, batch_size=8)


def _write_video(path, frames, rate=NTSC, audio_seconds=None):
  """uint8 frames to an H.264 mp4 at ``rate``, with a 440 Hz AAC tone when ``audio_seconds``."""
  with av.open(str(path), "w") as container:
    video = container.add_stream("libx264", rate=rate)
    video.height, video.width = frames.shape[1:3]
    video.pix_fmt = "yuv420p"
    video.options = {"crf": "0"}
    audio = None
    if audio_seconds:
      audio = container.add_stream("aac", rate=AUDIO_RATE)
      audio.layout = "mono"
    for frame in frames:
      for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
        container.mux(packet)
    for packet in video.encode():
      container.mux(packet)
    if audio is not None:
      count = int(audio_seconds * AUDIO_RATE)
      tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(count) / AUDIO_RATE)
      tone = tone.astype(np.float32)[None]
      for start in range(0, count, 1024):
        chunk = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], "fltp", "mono")
        chunk.sample_rate, chunk.pts = AUDIO_RATE, start
        for packet in audio.encode(chunk):
          container.mux(packet)
      for packet in audio.encode():
        container.mux(packet)


def _frames(seed, count, height, width):
  """Smooth random uint8 frames (codecs keep smooth images nearly exact)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (count, 4, 4, 3), dtype=np.uint8)
  return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
                   for f in small])  # fmt: skip


@pytest.fixture(scope="module")
def media(tmp_path_factory):
  root = tmp_path_factory.mktemp("media")
  # A 16-bit grayscale source that is not square (the centre square is used).
  gray = (_frames(1, 1, 60, 90)[0].mean(-1) * 257).astype(np.uint16)
  Image.fromarray(gray).save(root / "source16.png")
  # 6 driving frames at 29.97 fps with 0.5 s of sound, 80x60 (not square).
  driving = _frames(2, 6, 60, 80)
  _write_video(root / "talk.mp4", driving, audio_seconds=0.5)
  rgba = np.concatenate([_frames(3, 1, 64, 64)[0], np.full((64, 64, 1), 128, np.uint8)], -1)
  Image.fromarray(rgba).save(root / "pose.webp", lossless=True)
  return root


def _centre(frame):
  height, width = frame.shape[:2]
  side = min(height, width)
  return FaceCrop((width - side) // 2, (height - side) // 2, side).crop(frame, SIZE)


def _audio_seconds(path):
  with av.open(str(path)) as container:
    stream = container.streams.audio[0]
    return float(stream.duration * stream.time_base)


def test_video_writer_keeps_rate_and_audio_and_writes_atomically(media, tmp_path):
  from mmfa_jax.data.video import VideoWriter

  frames = _frames(5, 4, 30, 42) / 255.0  # (4, 30, 42, 3)
  for suffix, audio_codec in ((".mkv", "aac"), (".webm", "opus")):  # copied; re-encoded for webm
    out = tmp_path / f"v{suffix}"
    with VideoWriter(out, NTSC, audio_from=str(media / "talk.mp4")) as writer:
      for frame in frames:
        writer.write(frame)
    info = probe(out)
    assert (info.frames, info.fps, info.has_audio) == (4, NTSC, True), suffix
    with av.open(str(out)) as container:
      assert container.streams.audio[0].codec_context.name == audio_codec
    decoded = np.stack(list(iter_frames(str(out))))
    assert np.abs(decoded - frames).mean() < 0.03, suffix
  odd = tmp_path / "odd.mp4"  # yuv420p needs even sides: padded by repeating the edge
  with VideoWriter(odd, 25) as writer:
    writer.write(np.zeros((31, 41, 3), np.float32))
  assert (probe(odd).width, probe(odd).height) == (42, 32)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(RuntimeError, match="stopped"), VideoWriter(tmp_path / "v.webm", 25) as writer:
    writer.write(frames[0])
    raise RuntimeError("stopped half-way")
  assert sorted(os.listdir(tmp_path)) == before  # the earlier v.webm is untouched, no staging file
  assert probe(tmp_path / "v.webm").frames == 4


def test_animate_keeps_frames_rate_and_audio_and_matches_the_api(
  fv2v_dir, animator, media, tmp_path
):
  source, driving = str(media / "source16.png"), str(media / "talk.mp4")
  out = tmp_path / "out.mp4"
  args = ["--checkpoint", fv2v_dir, "--source", source, "--driving", driving]
  assert animate.main([*args, "--output", str(out), "--adapt-scale"]) == 0
  info = probe(out)
  assert (info.frames, info.fps, info.has_audio) == (6, NTSC, True)
  assert (info.width, info.height) == (SIZE, SIZE)
  assert abs(_audio_seconds(out) - _audio_seconds(driving)) < 0.05
  # A frame folder (lossless PNG) holds exactly the API's frames.
  folder = tmp_path / "frames"
  assert animate.main([*args, "--output", str(folder), "--adapt-scale"]) == 0
  written = np.stack(list(iter_frames(str(folder))))
  want = animator.animate(
    _centre(read_image(source)),
    np.stack([_centre(f) for f in iter_frames(driving)]),
    adapt_scale=True,
  )
  assert written.shape == (6, SIZE, SIZE, 3)
  np.testing.assert_allclose(written, want, atol=0.5 / 255 + 1e-6)
  decoded = np.stack(list(iter_frames(str(out))))  # and the H.264 file is close to them
  assert np.abs(decoded - want).mean() < 0.05  # yuv420p halves colour resolution
  # Free view and absolute mode reach the API the same way.
  assert animate.main([*args, "--output", str(folder), "--mode", "absolute", "--yaw", "15"]) == 0
  want = animator.animate(
    _centre(read_image(source)),
    np.stack([_centre(f) for f in iter_frames(driving)]),
    mode="absolute",
    yaw=15.0,
  )
  np.testing.assert_allclose(np.stack(list(iter_frames(str(folder)))), want, atol=0.5 / 255 + 1e-6)


def test_animate_other_inputs_and_outputs(fv2v_dir, media, tmp_path):
  args = ["--checkpoint", fv2v_dir, "--source", str(media / "pose.webp")]
  # A frame folder driver takes --fps, exactly; a webm output carries it.
  frames = tmp_path / "frames"
  frames.mkdir()
  for i, frame in enumerate(_frames(4, 3, 64, 64)):
    Image.fromarray(frame).save(frames / f"{i:03d}.png")
  out = tmp_path / "out.webm"
  assert animate.main([*args, "--driving", str(frames), "--output", str(out), "--fps", "12.5"]) == 0
  info = probe(out)
  assert (info.frames, info.fps, info.has_audio) == (3, Fraction(25, 2), False)
  # One image drives one image; a GIF driver gives a GIF with its frames, side by side.
  image_out = tmp_path / "one.jpg"
  assert (
    animate.main([*args, "--driving", str(frames / "001.png"), "--output", str(image_out)]) == 0
  )
  assert read_image(str(image_out)).shape == (SIZE, SIZE, 3)
  # --dtype bfloat16: the same frame within bfloat16's precision (8-bit PNGs).
  one = ["--driving", str(frames / "001.png")]
  assert animate.main([*args, *one, "--output", str(tmp_path / "f32.png")]) == 0
  assert (
    animate.main([*args, *one, "--output", str(tmp_path / "bf16.png"), "--dtype", "bfloat16"]) == 0
  )
  full = read_image(str(tmp_path / "f32.png")).astype(np.float64)  # [0, 1]
  half = read_image(str(tmp_path / "bf16.png")).astype(np.float64)
  assert 0 < np.abs(full - half).mean() < 0.01 and np.abs(full - half).max() < 0.05
  gif_out = tmp_path / "sbs.gif"
  assert (
    animate.main([*args, "--driving", str(out), "--output", str(gif_out), "--side-by-side"]) == 0
  )
  info = probe(gif_out)
  assert (info.frames, info.width, info.height) == (3, 3 * SIZE, SIZE)


def test_crop_finds_the_face_and_pastes_the_result_back(fv2v_dir, media, tmp_path):
  from skimage import data as skdata

  # Feathering, by hand: side 10, feather 0.2 -> a 2 px ramp; pixel centres 0.5, 1.5 -> 1/4, 3/4.
  ramp = feather_mask(10, 0.2)
  np.testing.assert_allclose(ramp[5, :3], [0.25, 0.75, 1.0])
  np.testing.assert_allclose(ramp[0, 0], 0.25)
  frame = np.zeros((20, 30, 3), np.float32)
  pasted = FaceCrop(5, 3, 10).paste(frame, np.ones((64, 64, 3), np.float32), 0.2)
  np.testing.assert_allclose(pasted[3:13, 5:15, 0], ramp, atol=1e-6)
  assert pasted[:3].max() == 0 and pasted[:, 15:].max() == 0

  photo = skdata.astronaut()[:320, 96:416]  # a real face, shipped inside scikit-image
  canvas = np.zeros((360, 560, 3), np.uint8)
  canvas[20:340, 180:500] = photo
  Image.fromarray(canvas).save(tmp_path / "portrait.png")
  driving = []
  for shift in range(4):  # the face pans on a wider frame
    frame = np.zeros((320, 480, 3), np.uint8)
    frame[:, 40 + 4 * shift : 360 + 4 * shift] = photo
    driving.append(frame)
  _write_video(tmp_path / "pan.mp4", np.stack(driving), rate=Fraction(25))
  folder = tmp_path / "pasted"
  args = ["--checkpoint", fv2v_dir, "--source", str(tmp_path / "portrait.png"), "--crop"]
  assert animate.main([*args, "--driving", str(tmp_path / "pan.mp4"), "--output", str(folder)]) == 0
  crop = find_face_crop([canvas / 255.0], margin=0.25)
  assert crop is not None and 180 <= crop.left and crop.left + crop.side <= 500
  outputs = list(iter_frames(str(folder)))
  assert len(outputs) == 4 and outputs[0].shape == canvas.shape
  inside = np.zeros(canvas.shape[:2], bool)
  inside[crop.top : crop.top + crop.side, crop.left : crop.left + crop.side] = True
  for output in outputs:  # the source everywhere outside the crop, the result inside
    np.testing.assert_allclose(output[~inside], canvas[~inside] / 255.0, atol=0.5 / 255 + 1e-6)
    assert np.abs(output[inside] - canvas[inside] / 255.0).mean() > 0.05
  sbs = tmp_path / "sbs.png"
  still = str(tmp_path / "portrait.png")
  assert animate.main([*args, "--driving", still, "--output", str(sbs), "--side-by-side"]) == 0
  assert read_image(str(sbs)).shape == (360, 3 * 560, 3)


def test_edit_command_matches_the_api(fv2v_dir, animator, media, tmp_path):
  source = str(media / "pose.webp")
  image = read_image(source)
  args = ["--checkpoint", fv2v_dir, "--source", source]
  out = tmp_path / "turned.png"
  assert edit.main([*args, "--output", str(out), "--yaw", "20", "--tz", "0.1"]) == 0
  state = animator.encode_source(image)
  translation = np.array(animator.source_motion(state).translation[0])
  translation[2] = 0.1
  want = animator.edit(image, yaw=20.0, translation=translation)
  np.testing.assert_allclose(read_image(str(out)), want, atol=0.5 / 255 + 1e-6)
  sweep = tmp_path / "sweep"
  assert edit.main([*args, "--output", str(sweep), "--sweep", "pitch", "--values=-20:20:5"]) == 0
  want = animator.sweep(image, "pitch", np.linspace(-20, 20, 5))
  np.testing.assert_allclose(np.stack(list(iter_frames(str(sweep)))), want, atol=0.5 / 255 + 1e-6)
  gif = tmp_path / "expression.gif"
  assert edit.main([*args, "--output", str(gif), "--sweep", "expression_scale", "--values",
                    "0,1,2", "--pose-from", str(media / "source16.png")]) == 0  # fmt: skip
  assert probe(gif).frames == 3


@pytest.fixture(scope="module")
def mmfa_runs(tmp_path_factory):
  """An MMFA training run (frozen Hopenet converted beside it) and an expression-VAE run on it."""
  root = tmp_path_factory.mktemp("runs")
  config = synthetic.get_config("tiny:mmfa")
  full = _model_variables(config, 1)
  image = np.zeros((1, SIZE, SIZE, 3), np.float32)
  hopenet = random_variables(Hopenet(**dict(config.model.hopenet)), image, seed=2)
  save_converted(root / "hopenet", hopenet, {"kind": "hopenet"})
  save_training_run(root / "mmfa", config, full)
  from configs import vox_vae

  vae_config = vox_vae.get_config("synthetic")
  vae_config.mmfa.workdir = str(root / "mmfa")
  vae_config.image_size = SIZE
  vae, vae_variables = random_vae(config)
  vae_config.expression_vae.update(latent_dim=vae.latent_dim, hidden=tuple(vae.hidden))
  save_training_run(root / "vae", vae_config, vae_variables)
  return root


def test_interpolate_command(mmfa_runs, media, tmp_path):
  args = ["--checkpoint", str(mmfa_runs / "vae"), "--hopenet", str(mmfa_runs / "hopenet"),
          "--source", str(media / "pose.webp")]  # fmt: skip
  strip = tmp_path / "samples.png"
  assert interpolate.main([*args, "--sample", "3", "--seed", "1", "--output", str(strip)]) == 0
  animator = Animator.from_checkpoint(mmfa_runs / "vae", hopenet=mmfa_runs / "hopenet")
  source = read_image(str(media / "pose.webp"))
  want = animator.sample_expressions(source, 3, seed=1)
  np.testing.assert_allclose(
    read_image(str(strip)), np.concatenate(list(want), axis=1), atol=0.5 / 255 + 1e-6
  )
  frames = tmp_path / "morph"
  ends = ["--from-image", str(media / "source16.png"), "--to-image", str(media / "pose.webp")]
  assert interpolate.main([*args, *ends, "--steps", "4", "--output", str(frames)]) == 0
  want = animator.interpolate_expression(source, _centre(read_image(ends[1])), source, 4)
  np.testing.assert_allclose(np.stack(list(iter_frames(str(frames)))), want, atol=0.5 / 255 + 1e-6)


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file and the problem, exit 2, nothing written


@pytest.fixture(scope="module")
def bad(tmp_path_factory, media):
  root = tmp_path_factory.mktemp("bad")
  (root / "notes.txt").write_text("not a picture")
  (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 junk junk")
  (root / "empty").mkdir()
  (root / "not_a_checkpoint").mkdir()
  Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(root / "blank.png")
  with av.open(str(root / "no_frames.mp4"), "w") as container:  # a video stream, no frames
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    container.start_encoding()  # the header only
  mixed = root / "mixed"  # frames that change size half-way
  mixed.mkdir()
  for i, side in enumerate((64, 64, 64, 64, 64, 64, 64, 64, 64, 48)):
    Image.fromarray(np.full((side, side, 3), 20 * i, np.uint8)).save(mixed / f"{i:02d}.png")
  return root


BAD_ANIMATE = {  # case: (options changed, flags added, message)
  "missing source": ({"--source": "{bad}/missing.png"}, [], "missing.png: no such file or folder"),
  "text source": ({"--source": "{bad}/notes.txt"}, [], "notes.txt: not an image or a video"),
  "broken video": ({"--driving": "{bad}/broken.mp4"}, [], "broken.mp4: not a readable video"),
  "empty folder": ({"--driving": "{bad}/empty"}, [], "empty: a folder with no image frames"),
  "no frames": ({"--driving": "{bad}/no_frames.mp4"}, [], "no_frames.mp4: has no video stream (no frames)"),
  "no face": ({"--source": "{bad}/blank.png"}, ["--crop"], "blank.png: no face found (--crop)"),
  "not a checkpoint": ({"--checkpoint": "{bad}/not_a_checkpoint"}, [],
                       "not_a_checkpoint: not an mmfa_jax checkpoint"),
  "other variant": ({"--variant": "mmfa"}, [], "a face_vid2vid checkpoint, but a mmfa one"),
  "many frames to an image": ({"--output": "{out}.png"}, [],
                              "out.png: an image holds one frame, this output has 6"),
  "unknown output": ({"--output": "{out}.avi"}, [], "out.avi: cannot write '.avi'"),
  "frames change size": ({"--driving": "{bad}/mixed"}, [],
                         "mixed: frames change size (48x48 after 64x64)"),
  "output is an input": ({"--output": "{media}/talk.mp4"}, [],
                         "talk.mp4: is also the --driving input; write the output elsewhere"),
}  # fmt: skip


def _assert_one_error(stderr, message):
  """One ``error:`` line, the last thing said (progress bars may come before it)."""
  lines = stderr.strip().splitlines()
  errors = [line for line in lines if line.startswith("error: ")]
  assert len(errors) == 1 and errors[0] == lines[-1] and message in errors[0], lines[-3:]


@pytest.mark.parametrize("case", list(BAD_ANIMATE))
def test_bad_animate_input(case, fv2v_dir, media, bad, tmp_path, capsys):
  changes, flags, message = BAD_ANIMATE[case]
  out = tmp_path / "out.mp4"
  out.write_bytes(b"an earlier result")  # must survive a failed run
  options = {
    "--checkpoint": fv2v_dir,
    "--source": str(media / "pose.webp"),
    "--driving": str(media / "talk.mp4"),
    "--output": str(out),
  }
  options.update(
    {k: v.format(bad=bad, out=tmp_path / "out", media=media) for k, v in changes.items()}
  )
  talk = (media / "talk.mp4").read_bytes()
  assert animate.main([item for pair in options.items() for item in pair] + flags) == 2
  _assert_one_error(capsys.readouterr().err, message)
  assert out.read_bytes() == b"an earlier result"
  assert sorted(os.listdir(tmp_path)) == ["out.mp4"]  # no partial or staging files
  assert (media / "talk.mp4").read_bytes() == talk


def test_bad_edit_and_interpolate_input(fv2v_dir, mmfa_runs, media, bad, tmp_path, capsys):
  source = str(media / "pose.webp")
  three = synthetic.get_config("tiny:face_vid2vid")  # 3 keypoints: no 3D hull for --adapt-scale
  three_dir = str(bad / "three_keypoints")
  save_converted(three_dir, {"model": _model_variables(three, 0)},
                 {"kind": "face_vid2vid", "model_config": three.model.to_json(), "image_size": SIZE})  # fmt: skip
  cases = [
    (animate.main, ["--checkpoint", three_dir, "--driving", str(media / "talk.mp4"),
                    "--adapt-scale"], "three_keypoints: --adapt-scale needs at least 4 keypoints"),
    (interpolate.main, ["--checkpoint", fv2v_dir, "--sample", "2"],
     "a face_vid2vid checkpoint, but a mmfa one is needed"),
    (interpolate.main, ["--checkpoint", str(mmfa_runs / "mmfa"), "--hopenet",
                        str(mmfa_runs / "hopenet"), "--sample", "2"], "mmfa: has no expression VAE"),
    (interpolate.main, ["--checkpoint", str(mmfa_runs / "mmfa"), "--sample", "2"],
     "mmfa: this MMFA model uses the frozen Hopenet"),
    (edit.main, ["--checkpoint", fv2v_dir, "--expression-from", str(bad / "notes.txt")],
     "notes.txt: not an image or a video"),
    (edit.main, ["--checkpoint", fv2v_dir, "--sweep", "yaw", "--values", "a:b"],
     "--values 'a:b': want START:STOP:COUNT"),
    (edit.main, ["--checkpoint", str(bad / "empty")], "empty: not an mmfa_jax checkpoint"),
  ]  # fmt: skip
  for main, argv, message in cases:
    assert main([*argv, "--source", source, "--output", str(tmp_path / "o.mp4")]) == 2, argv
    _assert_one_error(capsys.readouterr().err, message)
    assert os.listdir(tmp_path) == []


def test_the_commands_run_as_modules(fv2v_dir, media, bad, tmp_path):
  """``python -m mmfa_jax.animate``: a real process, a real exit status."""
  import subprocess
  import sys

  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  base = [sys.executable, "-m", "mmfa_jax.animate", "--checkpoint", fv2v_dir,
          "--source", str(media / "pose.webp"), "--output", str(tmp_path / "o.png")]  # fmt: skip
  result = subprocess.run([*base, "--driving", str(bad / "notes.txt")], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip
  assert result.returncode == 2 and "notes.txt: not an image or a video" in result.stderr
  result = subprocess.run([*base, "--driving", str(media / "pose.webp"), "--batch-size", "1"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip
  assert result.returncode == 0, result.stderr
  assert "wrote" in result.stderr and read_image(str(tmp_path / "o.png")).shape == (SIZE, SIZE, 3)
  assert "JAX backend up (cpu)" in result.stderr  # cli.start_backend, beside reading the weights


def test_a_failing_command_returns_after_the_backend_thread(media, tmp_path, monkeypatch, capsys):
  """cli.run brings JAX's backend up in a thread; a command that fails on its input at once still
  returns only after that thread (the interpreter never exits under a CUDA set-up)."""
  import threading
  import time

  import jax

  real_devices = jax.devices

  def slow_devices(*args, **kwargs):
    time.sleep(0.6)
    return real_devices(*args, **kwargs)

  monkeypatch.setattr(jax, "devices", slow_devices)
  start = time.perf_counter()
  argv = ["--checkpoint", str(tmp_path / "model"), "--source", str(media / "pose.webp"),
          "--driving", str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o.mp4")]  # fmt: skip
  assert animate.main(argv) == 2
  assert time.perf_counter() - start >= 0.6
  assert not [thread for thread in threading.enumerate() if thread.name == "jax-backend"]
  _assert_one_error(capsys.readouterr().err, "missing.mp4")


def test_ctrl_c_during_animate_leaves_no_output(fv2v_dir, media, tmp_path):
  """SIGINT while frames are being written: one 'interrupted' line, exit 130, no output file and
  no staging file left."""
  import sys

  from tool_runner import interrupt_when

  driving = tmp_path / "long"
  driving.mkdir()
  frame = np.asarray(Image.open(media / "pose.webp").convert("RGB"))
  for index in range(400):
    Image.fromarray(np.roll(frame, index, axis=1)).save(driving / f"{index:04d}.png")
  output = tmp_path / "out.mp4"
  command = [sys.executable, "-m", "mmfa_jax.animate", "--checkpoint", fv2v_dir, "--source",
             str(media / "pose.webp"), "--driving", str(driving), "--output", str(output),
             "--batch-size", "1"]  # fmt: skip
  written = rb"animating: .*\| *([3-9]|[1-9]\d+)/400 \["  # compiled, 3+ frames out
  running, status, text = interrupt_when(command, written)
  assert running, text[-2000:]
  assert status == 130, text[-2000:]
  assert f"interrupted: nothing was written to {output}" in text and "Traceback" not in text
  assert sorted(os.listdir(tmp_path)) == ["long"]  # no output, no staging file


def test_raw_weights_flag_reaches_the_loader(monkeypatch):
  """``--raw-weights`` (every model command) loads a run's last parameters, not their average."""
  import argparse

  from mmfa_jax import cli

  calls = []
  monkeypatch.setattr(Animator, "from_checkpoint", lambda *a, **kw: calls.append(kw))
  parser = argparse.ArgumentParser()
  cli.add_model_arguments(parser)
  for extra, averaged in (([], True), (["--raw-weights"], False)):
    cli.load_animator(parser.parse_args(["--checkpoint", "RUN", *extra]))
    assert calls[-1]["averaged"] is averaged
