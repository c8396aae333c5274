"""The grain pipelines: the training iterator and the padded evaluation batches of a process."""
from __future__ import annotations

import math
import os
from typing import Any, Iterator, Mapping

import grain
import numpy as np

from colorjax.data import skips, sources, transforms


def _process_seed(seed: int, process_index: int) -> int:
  """A per-process seed, so processes do not draw the same augmentations in lockstep."""
  return int(np.random.SeedSequence([int(seed), int(process_index)]).generate_state(1)[0])


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (pytest, notebooks) they are
  unparsed, so their defaults are taken as parsed."""
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _check_shard(num_records: int, process_index: int, process_count: int) -> None:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be in [0, process_count), got {process_index} of {process_count}")
  if num_records < process_count:
    raise ValueError(f"{num_records} images cannot be sharded over {process_count} processes")


def create_train_iterator(
    source: str | os.PathLike | sources.ImageSource,
    *,
    batch_size_per_process: int,
    crop_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    min_chroma: float = 0.0,
    augment: Mapping[str, Any] | transforms.Augment | None = None,
    num_threads: int = 2,
    num_workers: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    resize_size: int | None = None,
) -> skips.TrainIterator:
  """The training input of this process: a checkpointable iterator of random crops.

  Pipeline: the process's shard of the records (`source[process_index::process_count]`, disjoint
  across processes) -> shuffled per epoch -> repeated -> decode (unreadable files are skipped,
  counted in `iterator.stats` and logged at WARNING) -> drop near-gray images (mean chroma <
  `min_chroma`) -> resize the short side to `resize_size` -> random `crop_size` crop ->
  augmentations -> batches of `batch_size_per_process` (the last partial batch of a finite run is
  dropped). Random choices come from (seed, process, position), so two iterators with the same
  arguments yield the same batches, and `get_state()` / `set_state()` resume exactly.

  Args:
    source: an `ImageSource` or a spec for `image_source`.
    batch_size_per_process: images per batch in this process.
    crop_size: side of the square training crops.
    seed: the data seed (shuffle order and augmentations).
    process_index, process_count: this process and the number of processes (multi-host).
    min_chroma: images whose mean Lab chroma is below this are dropped (0 = keep all).
    augment: `Augment` or a mapping with its fields (flip, vflip, rotate_degrees, blur_sigma,
      cutout); other keys are ignored.
    num_threads: decoding threads in each process.
    num_workers: 0 decodes in this process; >0 uses that many grain worker processes
      (`mp_prefetch`; scripts need an `if __name__ == '__main__'` guard).
    shuffle: shuffle the records (each epoch differently).
    num_epochs: None repeats forever.
    resize_size: the short side before cropping (>= crop_size); None = crop_size, i.e. the crop
      spans the short side (ECCV16 used 256 -> 176).
  """
  source = sources.as_source(source)
  augment = transforms.Augment.from_mapping(augment)
  resize_size = crop_size if resize_size is None else int(resize_size)
  if batch_size_per_process < 1:
    raise ValueError(f"batch_size_per_process must be >= 1, got {batch_size_per_process}")
  if crop_size < 1 or resize_size < crop_size:
    raise ValueError(f"need 1 <= crop_size <= resize_size, got crop_size={crop_size}, "
                     f"resize_size={resize_size}")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be None or >= 1, got {num_epochs}")
  augment.validate(crop_size)
  _check_shard(len(source), process_index, process_count)

  shard = grain.MapDataset.source(source)[process_index::process_count]
  ds = shard.seed(_process_seed(seed, process_index))
  if shuffle:
    ds = ds.shuffle()
  ds = ds.repeat(num_epochs)
  ds = ds.random_map(transforms.TrainExample(crop_size, resize_size, float(min_chroma), augment))
  read_options = grain.ReadOptions(
      num_threads=num_threads,
      prefetch_buffer_size=max(2 * batch_size_per_process, 4 * num_threads, 1))
  ds = ds.to_iter_dataset(read_options)
  # Any window of 2 epochs holds a full epoch: that many skips in a row means no usable image.
  ds = skips.DropSkippedIterDataset(ds, max_consecutive_skips=2 * len(shard))
  ds = ds.batch(batch_size_per_process, drop_remainder=True)
  if num_workers > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(skips.CollectStatsIterDataset(ds))


def create_eval_batches(
    source: str | os.PathLike | sources.ImageSource,
    *,
    image_size: int,
    batch_size: int,
    num_threads: int = 2,
    stats: skips.DataStats | None = None,
) -> Iterator[dict[str, Any]]:
  """Evaluation batches of the whole source, in record order, padded to a fixed shape.

  Each image's short side is resized to `image_size` (bicubic) and center-cropped to a square (the
  256x256 protocol of published tables). Yields `{'rgb': uint8 (batch_size, S, S, 3), 'name':
  list[str], 'mask': bool (batch_size,)}`; padding rows are zeros with name '' and mask False.
  There are ceil(N / batch_size) batches whatever files are unreadable (those are logged,
  counted in `stats` if given, and replaced by padding). Every process reads them all; the
  periodic evaluation takes each process's rows (`evaluate.process_rows`).
  """
  source = sources.as_source(source)
  if batch_size < 1 or image_size < 1:
    raise ValueError(f"batch_size and image_size must be >= 1, got {batch_size}, {image_size}")
  num_batches = math.ceil(len(source) / batch_size)
  examples = grain.MapDataset.source(source).map(transforms.EvalExample(image_size))
  read_options = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=max(2 * batch_size, 4 * num_threads, 1))
  return _padded_batches(iter(examples.to_iter_dataset(read_options)), batch_size=batch_size,
                         image_size=image_size, num_batches=num_batches, stats=stats)


def _padded_batches(examples: grain.DatasetIterator, *, batch_size: int, image_size: int,
                    num_batches: int, stats: skips.DataStats | None) -> Iterator[dict[str, Any]]:
  """Groups `(rgb, name)` examples into `num_batches` batches, padding with mask=False rows."""

  def pad_batch(rgbs: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    rgb = np.zeros((batch_size, image_size, image_size, 3), np.uint8)
    if rgbs:
      rgb[:len(rgbs)] = np.stack(rgbs)
    mask = np.arange(batch_size) < len(rgbs)
    return {"rgb": rgb, "name": names + [""] * (batch_size - len(names)), "mask": mask}

  rgbs, names, emitted = [], [], 0
  try:
    for example in examples:
      if isinstance(example, skips.Skipped):
        if stats is not None:
          stats.add_unreadable(example.name)
        continue
      rgb, name = example
      rgbs.append(rgb)
      names.append(name)
      if stats is not None:
        stats.images += 1
      if len(rgbs) == batch_size:
        yield pad_batch(rgbs, names)
        rgbs, names, emitted = [], [], emitted + 1
    while emitted < num_batches:
      yield pad_batch(rgbs, names)
      rgbs, names, emitted = [], [], emitted + 1
  finally:
    examples.close()
