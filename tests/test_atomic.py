"""mmfa_jax.atomic: outputs appear whole or not at all, and a failed write keeps the older output."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from mmfa_jax import atomic


def _entries(folder) -> list[str]:
  return sorted(os.listdir(folder))


def test_write_atomically_writes_bytes_and_text_and_leaves_no_staging_file(tmp_path):
  path = tmp_path / "deep" / "er" / "data.bin"
  assert atomic.write_atomically(path, b"\x00\x01\x02") == os.fspath(path)
  assert path.read_bytes() == b"\x00\x01\x02"
  atomic.write_atomically(path, "héllo")  # replaces; text as UTF-8
  assert path.read_bytes() == "héllo".encode()
  assert _entries(path.parent) == ["data.bin"]


def test_staging_name_is_hidden_beside_the_output_and_keeps_the_suffix(tmp_path):
  staging = atomic.staging_name(tmp_path / "clip.mp4")
  assert os.path.dirname(staging) == os.fspath(tmp_path)
  assert os.path.basename(staging) == f".clip.partial-{os.getpid()}-{threading.get_native_id()}.mp4"


def test_a_failed_file_write_keeps_the_older_file_and_removes_the_staging_file(tmp_path):
  path = tmp_path / "metrics.json"
  path.write_text("old")
  with pytest.raises(RuntimeError, match="disk"):
    with atomic.staged(path) as staging:
      with open(staging, "w") as handle:
        handle.write("new, half")
      assert path.read_text() == "old"  # readers see the older file while the new one is written
      raise RuntimeError("disk full")
  assert path.read_text() == "old"
  assert _entries(tmp_path) == ["metrics.json"]


def test_a_staged_folder_replaces_an_older_folder_only_when_complete(tmp_path):
  output = tmp_path / "out"
  output.mkdir()
  (output / "a.txt").write_text("1")
  with pytest.raises(KeyboardInterrupt):
    with atomic.staged(output) as staging:
      os.makedirs(staging)
      (tmp_path / os.path.basename(staging) / "b.txt").write_text("2")
      raise KeyboardInterrupt
  assert _entries(output) == ["a.txt"] and _entries(tmp_path) == ["out"]

  with atomic.staged(output) as staging:
    os.makedirs(staging)
    with open(os.path.join(staging, "c.txt"), "w") as handle:
      handle.write("3")
  assert _entries(output) == ["c.txt"]  # replaced whole, nothing of the older folder kept
  assert (output / "c.txt").read_text() == "3"
  assert _entries(tmp_path) == ["out"]


def test_a_staging_file_left_by_a_killed_process_of_the_same_id_is_replaced(tmp_path):
  path = tmp_path / "grid.png"
  leftover = atomic.staging_name(path)
  os.makedirs(leftover)  # even a folder where the file goes
  atomic.write_atomically(path, b"png")
  assert path.read_bytes() == b"png" and _entries(tmp_path) == ["grid.png"]


def test_threads_writing_one_output_at_once_do_not_share_a_staging_file(tmp_path):
  """Both threads stage at the same time; each moves its own complete file into place (the last
  one wins), neither fails."""
  path = tmp_path / "log.txt"
  both_staged = threading.Barrier(2)
  errors = []

  def write(payload):
    try:
      with atomic.staged(path) as staging:
        with open(staging, "w") as handle:
          handle.write(payload)
        both_staged.wait(timeout=30)
    except Exception as error:  # reported by the assertion below
      errors.append(error)

  payloads = ("a" * 1000, "b" * 1000)
  threads = [threading.Thread(target=write, args=(payload,)) for payload in payloads]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors and path.read_text() in payloads
  assert _entries(tmp_path) == ["log.txt"]


def test_the_package_writers_go_through_it(tmp_path):
  """save_png, write_image, save_config and the metrics log's rewrite: complete outputs, no
  staging files, and an older PNG kept when a write fails."""
  import ml_collections

  from mmfa_jax.data.video import write_image
  from mmfa_jax.metric_logs import MetricWriter
  from mmfa_jax.train_loop import save_config
  from mmfa_jax.visualize import save_png

  image = np.linspace(0, 1, 4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)
  png = tmp_path / "grid.png"
  save_png(png, image)
  first = png.read_bytes()
  with pytest.raises(TypeError, match="Cannot handle"):  # PIL refuses 7 channels while staging
    save_png(png, np.zeros((4, 4, 7), np.float32))
  assert png.read_bytes() == first
  write_image(tmp_path / "frame.jpg", image)
  save_config(ml_collections.ConfigDict({"seed": 3}), os.fspath(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text()) == {"seed": 3}

  logs = tmp_path / "run"
  logger = MetricWriter(os.fspath(logs))
  for step in (1, 2, 3):
    logger.write(step, {"loss": float(step)})
  logger.close()
  MetricWriter(os.fspath(logs), resumed_step=2).close()  # drops the record after step 2
  steps = [json.loads(line)["step"] for line in (logs / "metrics.jsonl").read_text().splitlines()]
  assert steps == [1, 2]
  assert not [n for folder in (tmp_path, logs) for n in os.listdir(folder) if ".partial-" in n]
  assert _entries(tmp_path) == ["config.json", "frame.jpg", "grid.png", "run"]
