"""Videos and paths as users have them: one frame, a variable frame rate, a phone's rotation flag,
odd sizes, audio without video, names with spaces and accents; and outputs that would destroy
something (a folder of other files, a folder where a file goes, a file where a folder goes)."""

import json
import os
import shutil
import struct
from fractions import Fraction

import av
import numpy as np
from test_commands import SIZE, _assert_one_error, _frames, _write_video, fv2v_dir  # noqa: F401

from mmfa_jax import animate
from mmfa_jax.data.video import iter_frames, probe, read_frames

_IDENTITY = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_QUARTER = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # "rotate 90"


def _rotated_copy(plain, rotated):
  """``plain`` with its video track's display matrix set to a quarter turn clockwise: what a phone
  writes for portrait video stored sideways (the track header's matrix, as FFmpeg's rotate=90)."""
  data = bytearray(plain.read_bytes())
  at = data.find(_IDENTITY, data.find(b"tkhd"))
  assert at > 0
  data[at : at + 36] = _QUARTER
  rotated.write_bytes(bytes(data))


def _write_vfr(path, frames, times_ms):
  """uint8 frames at the given presentation times (milliseconds): a variable frame rate."""
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.height, stream.width = frames.shape[1:3]
    stream.pix_fmt, stream.time_base = "yuv420p", Fraction(1, 1000)
    stream.codec_context.time_base = Fraction(1, 1000)
    for frame, ms in zip(frames, times_ms):
      video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
      video_frame.pts = ms
      for packet in stream.encode(video_frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def test_rotated_one_frame_and_odd_sized_videos_read_upright(tmp_path):
  frames = np.zeros((3, 32, 48, 3), np.uint8)
  frames[:, :8, :8] = 255  # a white block in the stored frames' top-left corner
  _write_video(tmp_path / "stored.mp4", frames)
  _rotated_copy(tmp_path / "stored.mp4", tmp_path / "phone.mp4")
  info = probe(tmp_path / "phone.mp4")
  assert (info.width, info.height, info.frames) == (32, 48, 3)
  shown = list(iter_frames(tmp_path / "phone.mp4"))
  assert len(shown) == 3 and shown[0].shape == (48, 32, 3)
  # Turned a quarter clockwise, the stored top-left corner is shown at the top right.
  assert shown[0][:6, -6:].mean() > 0.9 and shown[0][:6, :6].mean() < 0.1
  np.testing.assert_array_equal(read_frames(str(tmp_path / "phone.mp4"), [2])[0], shown[2])

  _write_video(tmp_path / "one.mp4", _frames(4, 1, 32, 32))
  assert (
    probe(tmp_path / "one.mp4").frames == 1 and len(list(iter_frames(tmp_path / "one.mp4"))) == 1
  )

  odd = tmp_path / "odd"  # odd sides, as frame files (H.264 in yuv420p needs even sides)
  odd.mkdir()
  for i, frame in enumerate(_frames(5, 2, 47, 63)):
    from PIL import Image

    Image.fromarray(frame).save(odd / f"{i}.png")
  assert (probe(odd).width, probe(odd).height) == (63, 47)


def test_animate_takes_odd_videos_and_names_and_keeps_their_frames(fv2v_dir, tmp_path):  # noqa: F811
  folder = tmp_path / "mes vidéos à moi"
  folder.mkdir()
  source = folder / "visage d'été.png"
  from PIL import Image

  Image.fromarray(_frames(6, 1, 47, 63)[0]).save(source)  # odd sides: the centre square is used
  times = [0, 40, 70, 200, 210, 400]  # a variable frame rate: 6 frames over 0.4 s
  _write_vfr(folder / "parlé.mp4", _frames(7, 6, 48, 64), times)
  frames = np.zeros((2, 32, 48, 3), np.uint8)
  _write_video(tmp_path / "stored.mp4", frames)
  _rotated_copy(tmp_path / "stored.mp4", folder / "téléphone.mp4")
  for driving, count in (("parlé.mp4", 6), ("téléphone.mp4", 2)):
    out = tmp_path / "sortie finale" / f"résultat {driving}"
    argv = ["--checkpoint", fv2v_dir, "--source", str(source), "--driving", str(folder / driving),
            "--output", str(out), "--batch-size", "2"]  # fmt: skip
    assert animate.main(argv) == 0
    written = probe(out)
    assert written.frames == count and (written.width, written.height) == (SIZE, SIZE)
  rate = probe(folder / "parlé.mp4").fps  # written at the driving video's average rate
  assert probe(tmp_path / "sortie finale" / "résultat parlé.mp4").fps == rate


def test_outputs_that_would_destroy_something_are_refused(fv2v_dir, tmp_path, capsys):  # noqa: F811
  from PIL import Image

  source = tmp_path / "face.png"
  Image.fromarray(_frames(8, 1, 64, 64)[0]).save(source)
  _write_video(tmp_path / "talk.mp4", _frames(9, 3, 64, 64))
  (tmp_path / "holiday").mkdir()
  (tmp_path / "holiday" / "notes.txt").write_text("keep me")
  (tmp_path / "folder.mp4").mkdir()
  (tmp_path / "plain.txt").write_text("a file")
  with av.open(str(tmp_path / "sound.m4a"), "w") as container:  # audio, no video stream
    stream = container.add_stream("aac", rate=16000)
    stream.layout = "mono"
    tone = (0.1 * np.sin(np.arange(4096) / 5)).astype(np.float32)[None]
    for start in range(0, 4096, 1024):
      chunk = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], "fltp", "mono")
      chunk.sample_rate, chunk.pts = 16000, start
      for packet in stream.encode(chunk):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  mismatched = tmp_path / "mismatched"  # metadata describing another model than its arrays
  shutil.copytree(fv2v_dir, mismatched)
  metadata = json.loads((mismatched / "metadata.json").read_text())
  metadata["model_config"] = json.dumps(dict(json.loads(metadata["model_config"]), num_kp=5))
  (mismatched / "metadata.json").write_text(json.dumps(metadata))
  cases = [
    ({"--checkpoint": "mismatched"}, "mismatched: its weights do not fit the model it describes"),
    ({"--output": "holiday"}, "holiday: a folder holding more than frames ('notes.txt'...)"),
    ({"--output": "folder.mp4"}, "folder.mp4: a folder is there; a .mp4 file cannot replace it"),
    ({"--output": "plain.txt/out.mp4"}, "plain.txt is a file, so no folder can be made there"),
    ({"--driving": "sound.m4a"}, "sound.m4a: has no video stream (no frames)"),
    ({"--checkpoint": "plain.txt"}, "plain.txt: a file, not a checkpoint directory"),
  ]
  long_name = "n" * 300 + ".mp4"  # over the 255 bytes a file name may have
  os_cases = [  # refused by the system while writing: one line naming the path and why
    ({"--output": "/sys/mmfa_jax_out.mp4"}, "/sys/mmfa_jax_out.mp4: Permission denied"),  # root too
    ({"--output": long_name}, f"{long_name}: File name too long"),
  ]
  before = sorted(os.listdir(tmp_path))
  for changes, message in cases + os_cases:
    options = {"--checkpoint": fv2v_dir, "--source": "face.png", "--driving": "talk.mp4",
               "--output": "new.mp4"}  # fmt: skip
    options.update(changes)
    argv = [item for k, v in options.items() for item in (k, os.path.join(tmp_path, v))]
    assert animate.main(argv) == 2, changes
    _assert_one_error(capsys.readouterr().err, message)
    assert sorted(os.listdir(tmp_path)) == before
  assert (tmp_path / "holiday" / "notes.txt").read_text() == "keep me"
