"""Skip accounting across grain stages and worker processes: unreadable and near-gray records.

The transforms mark a dropped record `Skipped`; its count rides on the next image through
batching and `mp_prefetch` workers, and the `TrainIterator` collects it into `DataStats`."""
from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from colorjax import images

MAX_LISTED_SKIPS = 1000  # DataStats.skipped_files keeps at most this many names
_STAT_KEYS = ("_skipped", "_dropped_gray", "_skipped_names")


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Marks a record dropped by the per-image transform (unreadable or near-gray)."""
  name: str
  reason: str  # 'unreadable' | 'gray'


@dataclasses.dataclass
class DataStats:
  """What the training iterator has dropped so far (in this process, since the run started).

  images: images delivered in batches. skipped: records skipped because the file was unreadable
  (counted each time one comes round again). dropped_gray: near-gray images dropped.
  skipped_files: names of the unreadable files (each once, at most MAX_LISTED_SKIPS).
  """
  images: int = 0
  skipped: int = 0
  dropped_gray: int = 0
  skipped_files: list[str] = dataclasses.field(default_factory=list)

  def add_unreadable(self, name: str) -> None:
    """Counts one unreadable record and lists its name (while fewer than MAX_LISTED_SKIPS are)."""
    self.skipped += 1
    if len(self.skipped_files) < MAX_LISTED_SKIPS:
      self.skipped_files.append(name)

  def summary(self) -> str:
    text = (f"{self.images} images, {self.skipped} unreadable skipped, "
            f"{self.dropped_gray} near-gray dropped")
    if self.skipped_files:
      shown = ", ".join(images.display_name(name) for name in self.skipped_files[:20])
      more = len(self.skipped_files) - 20
      text += f" (unreadable: {shown}{f' and {more} more' if more > 0 else ''})"
    return text


class DropSkippedIterDataset(grain.IterDataset):
  """Drops `Skipped` markers, attaching their counts to the next image so they reach the main
  process through batching and `mp_prefetch` workers."""

  def __init__(self, parent: grain.IterDataset, max_consecutive_skips: int):
    super().__init__(parent)
    self._max_consecutive_skips = max_consecutive_skips

  def __iter__(self) -> grain.DatasetIterator:
    return _DropSkippedIterator(self._parent.__iter__(), self._max_consecutive_skips)

  def __str__(self) -> str:
    return "DropSkippedIterDataset"


class _DropSkippedIterator(grain.DatasetIterator):

  def __init__(self, parent: grain.DatasetIterator, max_consecutive_skips: int):
    super().__init__(parent)
    self._max_consecutive_skips = max_consecutive_skips

  def __next__(self) -> dict[str, Any]:
    unreadable, gray, names = 0, 0, []
    while True:
      element = next(self._parent)
      if not isinstance(element, Skipped):
        break
      if element.reason == "gray":
        gray += 1
      else:
        unreadable += 1
        names.append(element.name)
      if unreadable + gray > self._max_consecutive_skips:
        raise ValueError(
            f"no usable training image in {unreadable + gray} consecutive records "
            f"({unreadable} unreadable, {gray} near-gray); check the data, or lower min_chroma")
    return {"rgb": element, "_skipped": np.int32(unreadable), "_dropped_gray": np.int32(gray),
            "_skipped_names": "\n".join(names)}

  def get_state(self) -> dict[str, Any]:
    return self._parent.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state)

  def __str__(self) -> str:
    return "DropSkippedDatasetIterator"


class CollectStatsIterDataset(grain.IterDataset):
  """Strips the skip counts from batches into a `DataStats` (in the main process)."""

  def __iter__(self) -> TrainIterator:
    return TrainIterator(self._parent.__iter__())

  def __str__(self) -> str:
    return "CollectStatsIterDataset"


class TrainIterator(grain.DatasetIterator):
  """The training iterator: yields `{'rgb': uint8 (B, crop, crop, 3)}`; `stats` is a DataStats.

  `get_state()` / `set_state()` checkpoint the position (and the counts of `stats`) so a new
  iterator built the same way continues exactly where this one was.
  """

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self.stats = DataStats()

  def __next__(self) -> dict[str, np.ndarray]:
    batch = dict(next(self._parent))
    skipped, gray, names = (batch.pop(key) for key in _STAT_KEYS)
    if type(batch["rgb"]) is not np.ndarray:  # pylint: disable=unidiomatic-typecheck
      # Batches from worker processes live in shared memory that is released when the array is
      # collected; a plain copy frees it now instead of at some later (or interpreter-exit) GC.
      batch["rgb"] = np.array(batch["rgb"])
    self.stats.images += int(batch["rgb"].shape[0])
    self.stats.skipped += int(np.sum(skipped))
    self.stats.dropped_gray += int(np.sum(gray))
    listed = self.stats.skipped_files
    for joined in np.asarray(names).reshape(-1):
      for name in str(joined).split("\n"):
        if name and name not in listed and len(listed) < MAX_LISTED_SKIPS:
          listed.append(name)
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"pipeline": self._parent.get_state(), "images": self.stats.images,
            "skipped": self.stats.skipped, "dropped_gray": self.stats.dropped_gray}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["pipeline"])
    self.stats = DataStats(images=int(state["images"]), skipped=int(state["skipped"]),
                           dropped_gray=int(state["dropped_gray"]))

  def __str__(self) -> str:
    return "TrainIterator"
