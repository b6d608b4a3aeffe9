"""A TF-free TFDS builder writing VoxCeleb-style videos to ArrayRecord, and its grain source.

One record per video: ``video_id`` and ``identity`` (bytes), ``num_frames``, and ``frames``, a list
of JPEG-encoded frames resized to ``image_size``. Building and reading need no TensorFlow: the
features are plain tensors of bytes, decoded here with Pillow. Next to the TFDS files the builder
writes ``mmfa_index.json`` (per split: identity -> record indices, frame counts, skipped videos) so
training can sample identities without reading every record.

Build with ``python tools/build_dataset.py --input ROOT --output DIR``; read with
``ArrayRecordSource(DIR, 'train')`` in ``data.pipeline.train_dataset``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from typing import Any

import numpy as np
from PIL import Image

from mmfa_jax.data.video import FrameReadError, count_frames, is_video_entry, read_frames, resize

INDEX_FILE = "mmfa_index.json"
SPLITS = ("train", "test")


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
    buffer, format="JPEG", quality=quality
  )
  return buffer.getvalue()


def _decode_jpeg(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"), np.float32) / 255


def _builder_class():
  import tensorflow_datasets as tfds

  class VoxVideos(tfds.core.GeneratorBasedBuilder):
    """VoxCeleb-style video folders (``ROOT/{train,test}/``) as ArrayRecord shards."""

    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Pass root=ROOT: ROOT/train and ROOT/test hold videos or frame folders."
    )

    def __init__(self, *, root: str, image_size: int = 256, quality: int = 95, **kwargs: Any):
      self.root = root
      self.image_size = image_size
      self.quality = quality
      self.skipped: dict[str, list[str]] = {split: [] for split in SPLITS}
      self.written: dict[str, int] = {split: 0 for split in SPLITS}
      super().__init__(**kwargs)

    def _info(self) -> Any:
      features = tfds.features.FeaturesDict(
        {
          "video_id": tfds.features.Tensor(shape=(), dtype=np.object_),
          "identity": tfds.features.Tensor(shape=(), dtype=np.object_),
          "num_frames": tfds.features.Scalar(dtype=np.int32),
          "frames": tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_)),
        }
      )
      return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features)

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
      del dl_manager
      return {
        split: self._generate_examples(split)
        for split in SPLITS
        if os.path.isdir(os.path.join(self.root, split))
      }

    def _generate_examples(self, split: str):
      folder = os.path.join(self.root, split)
      for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not is_video_entry(path):
          continue
        try:
          num_frames = count_frames(path)
          if num_frames < 1:
            raise FrameReadError(f"{path}: no frames")
          frames = read_frames(path, range(num_frames))
        except FrameReadError as error:
          logging.warning("skipping %s", error)
          self.skipped[split].append(path)
          continue
        encoded = [_encode_jpeg(resize(frame, self.image_size), self.quality) for frame in frames]
        self.written[split] += 1
        yield (
          name,
          {
            "video_id": name,
            "identity": name.split("#")[0],
            "num_frames": len(encoded),
            "frames": encoded,
          },
        )

  return VoxVideos


def build_dataset(
  root: str, output: str, image_size: int = 256, quality: int = 95
) -> dict[str, Any]:
  """Builds ArrayRecord shards of ``root`` under ``output`` and writes the index; returns the index.

  Raises:
    ValueError: ``root`` has neither a train nor a test folder with usable videos.
  """
  import tensorflow_datasets as tfds

  if not any(os.path.isdir(os.path.join(root, split)) for split in SPLITS):
    raise ValueError(f"{root}: no train/ or test/ folder")
  output_existed = os.path.exists(output)
  builder = _builder_class()(
    root=root, image_size=image_size, quality=quality, data_dir=output, file_format="array_record"
  )
  try:
    builder.download_and_prepare()
  except AssertionError as error:  # TFDS: a split generated no examples
    if not output_existed:  # nothing half-written is left behind
      shutil.rmtree(output, ignore_errors=True)
    raise ValueError(_empty_split_message(root, builder)) from error
  index: dict[str, Any] = {"image_size": image_size, "splits": {}}
  for split in builder.info.splits:
    records = tfds.builder_from_directory(builder.data_dir).as_data_source(split=split)
    identities: dict[str, list[int]] = {}
    frames = []
    for position in range(len(records)):
      record = records[position]
      identities.setdefault(record["identity"].decode(), []).append(position)
      frames.append(int(record["num_frames"]))
    index["splits"][split] = {
      "identities": identities,
      "num_frames": frames,
      "skipped": builder.skipped.get(split, []),
    }
  if not index["splits"]:
    raise ValueError(f"{root}: no usable videos in train/ or test/")
  with open(os.path.join(builder.data_dir, INDEX_FILE), "w") as handle:
    json.dump(index, handle, indent=1)
  index["data_dir"] = str(builder.data_dir)
  return index


def _empty_split_message(root: str, builder: Any) -> str:
  """Why a split of ``root`` gave no examples: no video entries, or none of them readable."""
  for split in SPLITS:
    folder = os.path.join(root, split)
    if not os.path.isdir(folder) or builder.written[split]:
      continue
    skipped = builder.skipped[split]
    if not skipped:
      return f"{folder}: no videos (video files or folders of frames)"
    return (
      f"{folder}: none of its {len(skipped)} videos could be read "
      f"(first: {os.path.basename(skipped[0])}); nothing was written"
    )
  return f"{root}: a split gave no examples; nothing was written"


class ArrayRecordSource:
  """A built dataset's split, item i = identity i (``id_sampling``) or record i."""

  def __init__(self, data_dir: str, split: str = "train", id_sampling: bool = True):
    import tensorflow_datasets as tfds

    index_path = os.path.join(data_dir, INDEX_FILE)
    if not os.path.isfile(index_path):
      raise FileNotFoundError(
        f"{data_dir}: not a dataset built by tools/build_dataset.py (no {INDEX_FILE})"
      )
    with open(index_path) as handle:
      index = json.load(handle)
    if split not in index["splits"]:
      raise ValueError(f"{data_dir}: has no split {split!r} (found {sorted(index['splits'])})")
    self.data_dir = data_dir
    self.folder = data_dir
    self.records = tfds.builder_from_directory(data_dir).as_data_source(split=split)
    groups = index["splits"][split]["identities"]
    if id_sampling:
      self.items = [sorted(groups[name]) for name in sorted(groups)]
    else:
      self.items = [[position] for position in range(len(self.records))]

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"records": self.items[index]}

  def sample_pair(
    self, item: dict[str, Any], rng: np.random.Generator, size: int
  ) -> tuple[np.ndarray, np.ndarray]:
    record = self.records[int(item["records"][rng.integers(len(item["records"]))])]
    frames = record["frames"]
    first, second = np.sort(rng.integers(len(frames), size=2))
    try:
      pair = [_decode_jpeg(frames[int(first)]), _decode_jpeg(frames[int(second)])]
    except OSError as error:
      raise FrameReadError(
        f"{self.data_dir} record {record['video_id']!r}: bad JPEG ({error})"
      ) from error
    return resize(pair[0], size), resize(pair[1], size)
