"""Input pipelines (grain): image sources, the training iterator and evaluation batches.

Sources are random-access sequences of encoded records `(bytes, name)`:

  source = image_source("bundled")          # the photos shipped with the package
  source = image_source("/data/photos")     # a folder of images (recursive, any common format)
  source = image_source("/data/prepared")   # a tfds ArrayRecord dataset (`colorjax prepare`, or
                                            # one tfds prepared, e.g. imagenet2012): feature 'image'
  train_source, eval_source = split_source("/data/photos", eval_fraction=0.1)

Training yields `{'rgb': uint8 (B, crop, crop, 3)}` per process, deterministic for a seed and
resumable through `get_state()` / `set_state()`:

  it = create_train_iterator(train_source, batch_size_per_process=8, crop_size=176, seed=0,
                             process_index=jax.process_index(), process_count=jax.process_count(),
                             min_chroma=3.0, augment=dict(flip=True))
  batch = next(it); it.stats  # DataStats: unreadable files skipped, near-gray images dropped

Evaluation is the fixed `S x S` protocol (resize the short side to S, center crop), padded batches:

  for batch in create_eval_batches(eval_source, image_size=256, batch_size=16): ...
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import logging
import math
import os
import pathlib
import threading
from typing import Any, Iterator, Mapping, Protocol, Sequence

import grain
import numpy as np
from PIL import Image, ImageFilter

from colorjax import images

_log = logging.getLogger(__name__)

MAX_LISTED_SKIPS = 1000  # DataStats.skipped_files keeps at most this many names
CUTOUT_FILL = 128  # cutout squares are mid-gray (a = b = 0): no color to learn, no fake black
TFDS_IMAGE_KEY = "image"  # the tfds feature holding the encoded image (imagenet2012, places365...)
# tfds features naming a record, in order of preference; else the record is named `split[index]`.
TFDS_NAME_KEYS = ("name", "file_name", "filename", "image/filename")

_STAT_KEYS = ("_skipped", "_dropped_gray", "_skipped_names")


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------


class ImageSource(Protocol):
  """A grain random-access data source of encoded images.

  `source[i]` is `(data, name)`: the encoded bytes (None if the file could not be read) and a name
  for logs and per-folder reports; `source.key(i)` is a stable string identifying record `i`
  without reading it (used to split train/eval).
  """

  def __len__(self) -> int: ...

  def __getitem__(self, index: int) -> tuple[bytes | None, str]: ...

  def key(self, index: int) -> str: ...


class FolderSource:
  """Image files read from disk; records are named by their path relative to their input folder."""

  def __init__(self, files: Sequence[tuple[os.PathLike, os.PathLike]], description: str = ""):
    self._files = [str(path) for path, _ in files]
    self._names = [pathlib.PurePath(rel).as_posix() for _, rel in files]
    self._description = description or f"{len(self._files)} files"

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> tuple[bytes | None, str]:
    index = int(index)
    try:
      return images.read_bytes(self._files[index]), self._names[index]
    except images.ImageReadError as e:
      _log.warning("%s", e)
      return None, self._names[index]

  def key(self, index: int) -> str:
    return self._names[int(index)]

  def path(self, index: int) -> str:
    """The absolute file of record `index`."""
    return self._files[int(index)]

  def __repr__(self) -> str:
    return f"FolderSource({self._description})"


class TfdsSource:
  """Records of a prepared tfds dataset in ArrayRecord format, read without TensorFlow.

  The encoded image is the feature `image_key` (tfds.features.Image, kept undecoded); a record is
  named by the first of `TFDS_NAME_KEYS` it has (e.g. imagenet2012's 'file_name'), else
  `split[index]`.
  """

  def __init__(self, directory: str | os.PathLike, split: str = "train",
               image_key: str = TFDS_IMAGE_KEY):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    self._directory = str(directory)
    self._split = split
    self._image_key = image_key
    builder = tfds.builder_from_directory(self._directory)
    features = builder.info.features
    if image_key not in features:
      raise ValueError(f"tfds dataset {self._directory} has no feature {image_key!r} "
                       f"(its features: {sorted(features.keys())})")
    known_splits = sorted(builder.info.splits.keys())
    base_split = split.split("[")[0]
    if base_split not in known_splits:
      raise ValueError(
          f"tfds dataset {self._directory} has no split {split!r} (its splits: {known_splits})")
    self._name_key = next((k for k in TFDS_NAME_KEYS if k in features), None)
    self._records = builder.as_data_source(
        split, decoders={image_key: tfds.decode.SkipDecoding()})

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> tuple[bytes | None, str]:
    index = int(index)
    record = self._records[index]
    name = record.get(self._name_key) if self._name_key else None
    if isinstance(name, bytes):
      name = name.decode("utf-8", errors="replace")
    return record[self._image_key], str(name) if name else self.key(index)

  def key(self, index: int) -> str:
    return f"{self._split}[{int(index)}]"

  def __repr__(self) -> str:
    return f"TfdsSource({self._directory}, split={self._split!r}, {len(self)} records)"


class SubsetSource:
  """The records of `parent` at `indices`, in that order."""

  def __init__(self, parent: ImageSource, indices: Sequence[int], description: str = ""):
    self._parent = parent
    self._indices = [int(i) for i in indices]
    self._description = description

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> tuple[bytes | None, str]:
    return self._parent[self._indices[int(index)]]

  def key(self, index: int) -> str:
    return self._parent.key(self._indices[int(index)])

  def __repr__(self) -> str:
    return f"SubsetSource({self._parent!r}, {len(self)} records{self._description})"


def bundled_photos_dir() -> pathlib.Path:
  """The folder of photos shipped inside the package (used by the default config and tests)."""
  return pathlib.Path(str(importlib.resources.files("colorjax").joinpath("assets", "photos")))


def find_tfds_dir(path: str | os.PathLike) -> pathlib.Path | None:
  """The tfds dataset directory at `path` (`<path>`, `<path>/<version>` or
  `<path>/<name>/<version>`, identified by dataset_info.json + features.json), or None.

  Raises:
    ValueError: `path` holds several datasets or versions (pass the one you mean).
  """
  path = pathlib.Path(path)
  for pattern in ("", "*", "*/*"):
    found = sorted(p.parent for p in path.glob(f"{pattern}/dataset_info.json" if pattern
                                                else "dataset_info.json")
                   if (p.parent / "features.json").exists())
    if len(found) == 1:
      return found[0]
    if len(found) > 1:
      raise ValueError(f"{path} holds several tfds datasets: "
                       f"{', '.join(str(p) for p in found)}; pass one of them")
  return None


def image_source(spec: str | os.PathLike, *, split: str = "train",
                 image_key: str = TFDS_IMAGE_KEY) -> ImageSource:
  """Opens the images named by `spec` as a grain random-access source of `(bytes, name)`.

  Args:
    spec: 'bundled' (the package's photos); a folder of images (searched recursively, see
      `images.list_images`); or a prepared tfds dataset directory in ArrayRecord format (one with
      dataset_info.json, e.g. from `colorjax prepare`, or its parent folders).
    split: the tfds split to read (tfds slicing such as 'train[:10%]' works); ignored for folders.
    image_key: the tfds feature holding the encoded image.

  Raises:
    FileNotFoundError: `spec` does not exist.
    ValueError: a folder without images, or a tfds dataset without the split or feature.
  """
  if str(spec) == "bundled":
    path = bundled_photos_dir()
  else:
    path = pathlib.Path(spec).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"no such image folder or dataset: {spec}")
  if path.is_dir():
    tfds_dir = find_tfds_dir(path)
    if tfds_dir is not None:
      return TfdsSource(tfds_dir, split=split, image_key=image_key)
  files = images.list_images([path])
  if not files:
    raise ValueError(f"no image files ({', '.join(sorted(images.IMAGE_SUFFIXES))}) in {path}")
  return FolderSource(files, description=str(path))


def _as_source(source: str | os.PathLike | ImageSource) -> ImageSource:
  if isinstance(source, (str, os.PathLike)):
    return image_source(source)
  return source


def _unit_hash(key: str) -> float:
  """A stable hash of `key` in [0, 1), the same on every machine and Python version."""
  # surrogateescape: a non-UTF-8 file name hashes as its bytes (a UTF-8 one as before).
  digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def split_source(source: str | os.PathLike | ImageSource, *,
                 eval_fraction: float) -> tuple[ImageSource, ImageSource]:
  """Deterministic (train, eval) split of a source by a hash of each record's key.

  A folder's records are keyed by their relative path, so a file keeps its side when files are
  added or removed; tfds records are keyed by split and index (a tfds dataset's own 'validation'
  split is usually the better eval set: `image_source(path, split='validation')`). With
  `eval_fraction=0` the eval set is the whole training set (for tiny data). When the fraction rounds
  to nothing, the eval set still gets the one record with the smallest hash.

  Raises:
    ValueError: `eval_fraction` outside [0, 1), or too few records for both sides.
  """
  source = _as_source(source)
  if not 0.0 <= eval_fraction < 1.0:
    raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
  if eval_fraction == 0.0:
    return source, source
  if len(source) < 2:
    raise ValueError(f"cannot split {len(source)} record(s) of {source!r} into train and eval; "
                     "use eval_fraction=0 to evaluate on the training images")
  hashes = np.array([_unit_hash(source.key(i)) for i in range(len(source))])
  is_eval = hashes < eval_fraction
  if not is_eval.any():
    is_eval[np.argmin(hashes)] = True
  if is_eval.all():
    is_eval[np.argmax(hashes)] = False
  train = SubsetSource(source, np.flatnonzero(~is_eval), ", train split")
  held_out = SubsetSource(source, np.flatnonzero(is_eval), f", eval split {eval_fraction:g}")
  return train, held_out


def count_images(source: str | os.PathLike | ImageSource) -> int:
  """The number of records of a source (unreadable files included)."""
  return len(_as_source(source))


# ------------------------------------------------------------------------------------------------
# Per-image transforms
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training augmentations; flips follow the ECCV16 recipe, the rest seed 001's.

  flip: horizontal flip with probability 1/2.
  vflip: vertical flip with probability 1/2.
  rotate_degrees: rotation by an angle uniform in [-d, d]; the crop is taken from a larger patch so
    that no corner of the rotated image is empty.
  blur_sigma: with probability 1/2, a Gaussian blur with sigma uniform in (0, blur_sigma] pixels.
  cutout: side in pixels of a mid-gray square at a uniform random centre (clipped at the borders,
    as in DeVries & Taylor 2017); 0 = off.
  """
  flip: bool = True
  vflip: bool = False
  rotate_degrees: float = 0.0
  blur_sigma: float = 0.0
  cutout: int = 0

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any] | Augment | None) -> Augment:
    """An Augment from a dict or ConfigDict; keys that are not fields are ignored, so a whole
    `config.data` can be passed."""
    if mapping is None:
      return cls()
    if isinstance(mapping, Augment):
      return mapping
    casts = {"flip": bool, "vflip": bool, "rotate_degrees": float, "blur_sigma": float,
             "cutout": int}
    values = {}
    for key, cast in casts.items():
      value = mapping.get(key, None)
      if value is not None:
        try:
          values[key] = cast(value)
        except (TypeError, ValueError) as e:
          raise ValueError(f"augment.{key} must be a {cast.__name__}, got {value!r}") from e
    augment = cls(**values)
    augment.validate()
    return augment

  def validate(self, crop_size: int | None = None) -> None:
    if not 0.0 <= float(self.rotate_degrees) <= 180.0:
      raise ValueError(f"augment.rotate_degrees must be in [0, 180], got {self.rotate_degrees}")
    if float(self.blur_sigma) < 0.0:
      raise ValueError(f"augment.blur_sigma must be >= 0, got {self.blur_sigma}")
    if int(self.cutout) < 0 or int(self.cutout) != self.cutout:
      raise ValueError(f"augment.cutout must be an integer >= 0, got {self.cutout}")
    if crop_size is not None and self.cutout > crop_size:
      raise ValueError(f"augment.cutout ({self.cutout}) is larger than the crop ({crop_size})")


@dataclasses.dataclass(frozen=True)
class _Skipped:
  """Marks a record dropped by the per-image transform (unreadable or near-gray)."""
  name: str
  reason: str  # 'unreadable' | 'gray'


_warned_names: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(name: str, message: str) -> None:
  """Logs an unreadable file once per process (it comes back every epoch)."""
  with _warned_lock:
    if name in _warned_names:
      return
    _warned_names.add(name)
  _log.warning("skipping unreadable image: %s", message)


def _resize_short_side(img: Image.Image, short_side: int, resample: int,
                       reducing_gap: float | None = None) -> Image.Image:
  """Resizes so the shorter side is exactly `short_side`, keeping the aspect ratio.

  `reducing_gap` (Pillow) first shrinks large images by an integer factor: faster, and not exactly
  the plain antialiased resize.
  """
  width, height = img.size
  scale = short_side / min(width, height)
  size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
  if size == img.size:
    return img
  return img.resize(size, resample, reducing_gap=reducing_gap if scale < 1.0 else None)


def _rotated_patch_side(crop_size: int, angle_degrees: float) -> int:
  """Side of the square patch whose rotation by the angle covers a centred crop_size square."""
  theta = math.radians(angle_degrees)
  return math.ceil(crop_size * (abs(math.cos(theta)) + abs(math.sin(theta)))) + 2


@dataclasses.dataclass(frozen=True)
class TrainExample:
  """Decode -> near-gray check -> resize -> random crop -> augmentations, for `random_map`.

  Called as `transform((data, name), rng)`; returns uint8 `(crop, crop, 3)` or a `_Skipped` marker.
  All randomness comes from `rng` (grain derives it from the seed and the element's index), so the
  result depends only on (seed, position in the stream).
  """
  crop_size: int
  resize_size: int
  min_chroma: float
  augment: Augment

  def __call__(self, record: tuple[bytes | None, str], rng: np.random.Generator):
    data, name = record
    aug = self.augment
    angle = 0.0
    if aug.rotate_degrees:
      angle = float(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
    patch = _rotated_patch_side(self.crop_size, angle) if angle else self.crop_size
    short_side = max(self.resize_size, patch)
    try:
      rgb_HW3 = images.decode_rgb(data, name, min_side=short_side)
    except images.ImageReadError as e:
      _warn_once(name, str(e))
      return _Skipped(name, "unreadable")
    if self.min_chroma > 0 and images.chroma(rgb_HW3) < self.min_chroma:
      return _Skipped(name, "gray")

    img = _resize_short_side(Image.fromarray(rgb_HW3), short_side, Image.Resampling.BILINEAR,
                             reducing_gap=3.0)
    width, height = img.size
    left = int(rng.integers(0, width - patch + 1))
    top = int(rng.integers(0, height - patch + 1))
    img = img.crop((left, top, left + patch, top + patch))
    if angle:
      img = img.rotate(angle, resample=Image.Resampling.BILINEAR)
      margin = (patch - self.crop_size) // 2
      img = img.crop((margin, margin, margin + self.crop_size, margin + self.crop_size))
    if aug.blur_sigma and rng.random() < 0.5:
      sigma = float(aug.blur_sigma) * (1.0 - float(rng.random()))  # in (0, blur_sigma]
      img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
    crop_HW3 = np.asarray(img, dtype=np.uint8)
    if aug.flip and rng.random() < 0.5:
      crop_HW3 = crop_HW3[:, ::-1]
    if aug.vflip and rng.random() < 0.5:
      crop_HW3 = crop_HW3[::-1, :]
    if aug.cutout:
      crop_HW3 = crop_HW3.copy()
      cy, cx = (int(v) for v in rng.integers(0, self.crop_size, size=2))
      half = aug.cutout // 2
      crop_HW3[max(0, cy - half):cy - half + aug.cutout,
               max(0, cx - half):cx - half + aug.cutout] = CUTOUT_FILL
    return np.ascontiguousarray(crop_HW3)


@dataclasses.dataclass(frozen=True)
class EvalExample:
  """Decode -> resize the short side to image_size -> center crop; `_Skipped` if unreadable."""
  image_size: int

  def __call__(self, record: tuple[bytes | None, str]):
    data, name = record
    try:
      rgb_HW3 = images.decode_rgb(data, name)
    except images.ImageReadError as e:
      _warn_once(name, str(e))
      return _Skipped(name, "unreadable")
    return center_crop_resize(rgb_HW3, self.image_size), name


def center_crop_resize(rgb_HW3: np.ndarray, image_size: int) -> np.ndarray:
  """The `S x S` evaluation protocol: resize the short side to S (antialiased bicubic), then crop
  the centre S x S."""
  img = _resize_short_side(Image.fromarray(rgb_HW3), image_size, Image.Resampling.BICUBIC)
  width, height = img.size
  left, top = (width - image_size) // 2, (height - image_size) // 2
  return np.asarray(img.crop((left, top, left + image_size, top + image_size)), dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# Skip accounting across grain stages (and worker processes)
# ------------------------------------------------------------------------------------------------


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

  def summary(self) -> str:
    text = (f"{self.images} images, {self.skipped} unreadable skipped, "
            f"{self.dropped_gray} near-gray dropped")
    if self.skipped_files:
      shown = ", ".join(images.display_name(name) for name in self.skipped_files[:20])
      more = len(self.skipped_files) - 20
      text += f" (unreadable: {shown}{f' and {more} more' if more > 0 else ''})"
    return text


class _DropSkippedIterDataset(grain.IterDataset):
  """Drops `_Skipped` markers, attaching their counts to the next image so they reach the main
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
      if not isinstance(element, _Skipped):
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


class _CollectStatsIterDataset(grain.IterDataset):
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


# ------------------------------------------------------------------------------------------------
# Pipelines
# ------------------------------------------------------------------------------------------------


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
    source: str | os.PathLike | ImageSource,
    *,
    batch_size_per_process: int,
    crop_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    min_chroma: float = 0.0,
    augment: Mapping[str, Any] | Augment | None = None,
    num_threads: int = 2,
    num_workers: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    resize_size: int | None = None,
) -> TrainIterator:
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
  source = _as_source(source)
  augment = Augment.from_mapping(augment)
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
  ds = ds.random_map(TrainExample(crop_size, resize_size, float(min_chroma), augment))
  read_options = grain.ReadOptions(
      num_threads=num_threads,
      prefetch_buffer_size=max(2 * batch_size_per_process, 4 * num_threads, 1))
  ds = ds.to_iter_dataset(read_options)
  # Any window of 2 epochs holds a full epoch: that many skips in a row means no usable image.
  ds = _DropSkippedIterDataset(ds, max_consecutive_skips=2 * len(shard))
  ds = ds.batch(batch_size_per_process, drop_remainder=True)
  if num_workers > 0:
    _ensure_absl_flags_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return iter(_CollectStatsIterDataset(ds))


def create_eval_batches(
    source: str | os.PathLike | ImageSource,
    *,
    image_size: int,
    batch_size: int,
    num_threads: int = 2,
    stats: DataStats | None = None,
) -> Iterator[dict[str, Any]]:
  """Evaluation batches of the whole source, in record order, padded to a fixed shape.

  Each image's short side is resized to `image_size` (bicubic) and center-cropped to a square (the
  256x256 protocol of published tables). Yields `{'rgb': uint8 (batch_size, S, S, 3), 'name':
  list[str], 'mask': bool (batch_size,)}`; padding rows are zeros with name '' and mask False.
  There are ceil(N / batch_size) batches whatever files are unreadable (those are logged,
  counted in `stats` if given, and replaced by padding). Every process reads them all; the
  periodic evaluation takes each process's rows (`evaluate.process_rows`).
  """
  source = _as_source(source)
  if batch_size < 1 or image_size < 1:
    raise ValueError(f"batch_size and image_size must be >= 1, got {batch_size}, {image_size}")
  num_batches = math.ceil(len(source) / batch_size)
  examples = grain.MapDataset.source(source).map(EvalExample(image_size))
  read_options = grain.ReadOptions(num_threads=num_threads,
                                   prefetch_buffer_size=max(2 * batch_size, 4 * num_threads, 1))
  return _padded_batches(iter(examples.to_iter_dataset(read_options)), batch_size=batch_size,
                         image_size=image_size, num_batches=num_batches, stats=stats)


def _padded_batches(examples: grain.DatasetIterator, *, batch_size: int, image_size: int,
                    num_batches: int, stats: DataStats | None) -> Iterator[dict[str, Any]]:
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
      if isinstance(example, _Skipped):
        if stats is not None:
          stats.skipped += 1
          if len(stats.skipped_files) < MAX_LISTED_SKIPS:
            stats.skipped_files.append(example.name)
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
