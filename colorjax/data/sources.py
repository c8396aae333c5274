"""Image sources: folders and prepared tfds (ArrayRecord) datasets as records, and their split.

A source is a grain random-access sequence of encoded records `(bytes, name)`; `split_source`
divides one into train and eval by a hash of each record's key."""
from __future__ import annotations

import hashlib
import importlib.resources
import logging
import os
import pathlib
from typing import Protocol, Sequence

import numpy as np

from colorjax import images

_log = logging.getLogger(__name__)

TFDS_IMAGE_KEY = "image"  # the tfds feature holding the encoded image (imagenet2012, places365...)
# tfds features naming a record, in order of preference; else the record is named `split[index]`.
TFDS_NAME_KEYS = ("name", "file_name", "filename", "image/filename")


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


def as_source(source: str | os.PathLike | ImageSource) -> ImageSource:
  """`source` itself, or the source that `image_source` opens for a spec."""
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
  source = as_source(source)
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
