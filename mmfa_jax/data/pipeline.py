"""grain pipelines of (source, driving) frame pairs, and global batches on a device mesh.

Sources are random-access collections of *items* (an identity's videos, or a synthetic video);
``PairSampler`` (a grain ``RandomMap``) picks an item's video and two frame indices uniformly with
replacement, sorted (the first is the source), decodes only those two frames, resizes and augments
them (architecture.md 9.3). A video that cannot be read is skipped with a warning naming the file,
another item is drawn, and the number of skips travels with the sample (``skipped``), so training
logs can report it.

Pipeline: index dataset -> ``seed().shuffle().repeat()`` -> this process's slice ->
``random_map(PairSampler)`` -> ``batch`` -> ``to_iter_dataset`` -> optional ``mp_prefetch``. The
iterator's ``get_state``/``set_state`` resume it at the same next batch.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Any

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmfa_jax.data.augment import augment_pair
from mmfa_jax.data.synthetic import SyntheticHeads
from mmfa_jax.data.video import FrameReadError, count_frames, is_video_entry, read_frames, resize

MAX_RESAMPLES = 100


class SyntheticSource:
  """Random access over synthetic videos: item i is video i."""

  def __init__(self, heads: SyntheticHeads):
    self.heads = heads

  def __len__(self) -> int:
    return self.heads.num_videos

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"synthetic": int(index)}

  def sample_pair(
    self, item: dict[str, Any], rng: np.random.Generator, size: int
  ) -> tuple[np.ndarray, np.ndarray]:
    first, second = np.sort(rng.integers(self.heads.num_frames, size=2))
    video = item["synthetic"]
    return self.heads.frame(video, int(first), size), self.heads.frame(video, int(second), size)


def _require_one_readable(folder: str, videos: list[str]) -> None:
  """Reads the first frame of each video in turn until one works (normally the first): a data set
  whose every video is unreadable is refused at start, not after a hundred skipped samples."""
  first_error = None
  for video in videos:
    try:
      if count_frames(video) >= 1:
        read_frames(video, [0])
        return
      raise FrameReadError(f"{video}: no frames")
    except FrameReadError as error:
      first_error = first_error or error
  raise ValueError(
    f"{folder}: none of its {len(videos)} videos could be read (first: {first_error})"
  )


class VideoFolderSource:
  """``ROOT/SPLIT`` entries (video files or frame folders), grouped by identity.

  With ``id_sampling`` (the reference's default for training) item i is identity i (the name up to
  the first ``#``) with all its videos; otherwise every video is its own item.

  Raises:
    FileNotFoundError / ValueError: the folder is missing or holds no usable entry.
  """

  def __init__(self, root: str, split: str = "train", id_sampling: bool = True):
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
      raise FileNotFoundError(
        f"{folder}: no such folder (expected ROOT/{split}/ with one entry per video)"
      )
    entries = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    videos = [entry for entry in entries if is_video_entry(entry)]
    if not videos:
      raise ValueError(
        f"{folder}: no videos (expected .mp4/.gif/.mov/.webm files or folders of frames)"
      )
    _require_one_readable(folder, videos)
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for video in videos:
      key = os.path.basename(video).split("#")[0] if id_sampling else os.path.basename(video)
      groups[key].append(video)
    self.folder = folder
    self.identities = sorted(groups)
    self.videos = {identity: groups[identity] for identity in self.identities}

  def __len__(self) -> int:
    return len(self.identities)

  def __getitem__(self, index: int) -> dict[str, Any]:
    identity = self.identities[index]
    return {"identity": identity, "videos": list(self.videos[identity])}

  def sample_pair(
    self, item: dict[str, Any], rng: np.random.Generator, size: int
  ) -> tuple[np.ndarray, np.ndarray]:
    path = item["videos"][rng.integers(len(item["videos"]))]
    num_frames = count_frames(path)
    if num_frames < 1:
      raise FrameReadError(f"{path}: no frames")
    indices = np.sort(rng.integers(num_frames, size=2))
    frames = read_frames(path, [int(i) for i in indices])
    return resize(frames[0], size), resize(frames[1], size)


class PairSampler(grain.transforms.RandomMap):
  """Index -> ``{'source', 'driving'}`` float32 ``(size, size, 3)`` in [0, 1] and ``skipped``.

  The source decides how an item becomes two frames (``source.sample_pair(item, rng, size)``).
  """

  def __init__(self, source: Any, image_size: int, augment: bool = True, jitter: float = 0.1):
    self.source = source
    self.image_size = image_size
    self.augment = augment
    self.jitter = jitter

  def random_map(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
    skipped = 0
    for _ in range(MAX_RESAMPLES):
      item = self.source[int(index)]
      try:
        source, driving = self.source.sample_pair(item, rng, self.image_size)
        break
      except FrameReadError as error:
        logging.warning("skipping unreadable video: %s", error)
        skipped += 1
        index = rng.integers(len(self.source))
    else:
      raise RuntimeError(
        f"{MAX_RESAMPLES} unreadable videos in a row in {getattr(self.source, 'folder', 'the source')}"
      )
    if self.augment:
      source, driving = augment_pair(source, driving, rng, self.jitter)
    return {"source": source, "driving": driving, "skipped": np.int32(skipped)}


def index_dataset(num_items: int, seed: int) -> grain.MapDataset:
  """Item indices, shuffled anew each epoch and repeated forever (the global order)."""
  return grain.MapDataset.range(num_items).seed(seed).shuffle().repeat()


class ProcessBatchSlice(grain.MapDataset):
  """This process's rows of each global batch: global batch ``b`` is elements ``[b*G, (b+1)*G)``
  of the parent and process ``p`` of ``n`` reads rows ``[p*L, (p+1)*L)`` of it (``L = G / n``).

  So the global batch (and the randomness drawn for each of its elements, seeded by the parent's
  index) is the same for any number of processes, and processes never read the same element.
  """

  def __init__(
    self, parent: grain.MapDataset, global_batch: int, process_index: int, process_count: int
  ):
    super().__init__(parent)
    if global_batch % process_count:
      raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
    self._global = global_batch
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    self._length = len(parent) // global_batch * self._local

  def __len__(self) -> int:
    return self._length

  def parent_index(self, index: int) -> int:
    batch, row = divmod(index, self._local)
    return batch * self._global + self._offset + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self.parent_index(index)]

  def __str__(self) -> str:
    return f"ProcessBatchSlice(global={self._global}, local={self._local}, offset={self._offset})"


def train_dataset(
  source: Any,
  *,
  image_size: int,
  batch_size: int,
  seed: int = 0,
  augment: bool = True,
  process_index: int | None = None,
  process_count: int | None = None,
  worker_count: int = 0,
  read_threads: int = 16,
  prefetch: int = 500,
) -> grain.IterDataset:
  """Per-process batches of ``batch_size // process_count`` pairs (``batch_size`` is global).

  The processes' batches put side by side (process order) are the global batch, identical for any
  process count (``ProcessBatchSlice``). ``read_threads`` and ``prefetch`` (elements read ahead)
  are grain's ReadOptions.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if batch_size % process_count:
    raise ValueError(f"global batch {batch_size} is not divisible by {process_count} processes")
  dataset = index_dataset(len(source), seed).random_map(PairSampler(source, image_size, augment))
  dataset = ProcessBatchSlice(dataset, batch_size, process_index, process_count)
  read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)
  dataset = dataset.batch(batch_size // process_count, drop_remainder=True).to_iter_dataset(
    read_options
  )
  if worker_count > 0:
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return dataset


def global_batch(
  batch: dict[str, np.ndarray], mesh: Mesh, axis: str = "data"
) -> dict[str, jax.Array]:
  """This process's slice of a batch -> global arrays sharded along ``axis`` of ``mesh``."""
  sharding = NamedSharding(mesh, P(axis))
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }


def make_source(data_config: Any, split: str = "train") -> Any:
  """The source a config's ``data`` section names (``synthetic``, ``folders`` or ``arrayrecord``).

  Raises:
    ValueError: unknown source, or ``data.root`` unset for a file-based source (before anything
      is compiled or read).
  """
  kind = data_config.source
  if kind == "synthetic":
    return SyntheticSource(SyntheticHeads(**dict(data_config.synthetic)))
  if kind not in ("folders", "arrayrecord"):
    raise ValueError(f"config.data.source must be synthetic, folders or arrayrecord, got {kind!r}")
  if not data_config.get("root"):
    raise ValueError(f"config.data.root is not set (the {kind} data set to train on)")
  if kind == "folders":
    return VideoFolderSource(data_config.root, split, data_config.id_sampling)
  from mmfa_jax.data.arrayrecord import ArrayRecordSource

  return ArrayRecordSource(data_config.root, split, data_config.id_sampling)
