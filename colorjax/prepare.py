"""`colorjax prepare`: a folder of images -> a tfds dataset in ArrayRecord format (no TensorFlow).

ArrayRecord shards give fast random access from few large files (instead of millions of small
ones), which is what a grain pipeline on a network filesystem or a TPU VM wants:

  path = prepare_folder("/data/photos", "/data/prepared")  # /data/prepared/colorjax_folder/1.0.0
  source = colorjax.data.image_source(path)                 # the same (bytes, name) records

Each example has 'image' (the file's encoded bytes, unchanged unless `max_side` shrinks it, so
nothing is lost and decoding stays a plain JPEG/PNG decode) and 'name' (its path relative to the
folder). Every file is decoded once at prepare time; unreadable ones are left out, logged, and
listed under 'skipped_files' in the dataset's metadata.json (`skipped_files(path)` reads it back).
Datasets prepared by tfds itself in ArrayRecord format (e.g. imagenet2012, whose encoded image is
also the feature 'image') are read through the same `image_source`.
"""
from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import os
import pathlib
import re
import tempfile
from typing import Iterator, Sequence

from PIL import Image

from colorjax import images

_log = logging.getLogger(__name__)

VERSION = "1.0.0"
SPLIT = "train"
JPEG_QUALITY = 95  # for images re-encoded after a `max_side` resize
_CHUNK = 64  # files decoded concurrently before they are written


def _encode_for_storage(data: bytes, name: str, max_side: int | None) -> bytes:
  """Validates `data` by decoding it; returns it unchanged, or shrunk to `max_side` if larger.

  A shrunk JPEG is re-encoded as JPEG (quality 95), any other format as lossless PNG; its EXIF
  orientation and color mode are already applied. Raises ImageReadError for unreadable data.
  """
  rgb_HW3 = images.decode_rgb(data, name)
  height, width = rgb_HW3.shape[:2]
  if max_side is None or max(height, width) <= max_side:
    return data
  scale = max_side / max(height, width)
  size = (max(1, round(width * scale)), max(1, round(height * scale)))
  img = Image.fromarray(rgb_HW3).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
  buffer = io.BytesIO()
  if data[:3] == b"\xff\xd8\xff":
    img.save(buffer, format="JPEG", quality=JPEG_QUALITY)
  else:
    img.save(buffer, format="PNG")
  return buffer.getvalue()


def _checked_records(files: Sequence[tuple[pathlib.Path, pathlib.Path]], max_side: int | None,
                     num_threads: int, skipped: list[str]) -> Iterator[tuple[str, bytes]]:
  """(relative name, bytes to store) for each readable file, in order; appends the rest to
  `skipped` with a WARNING."""

  def check(file_pair):
    path, relative = file_pair
    name = relative.as_posix()
    try:
      return name, _encode_for_storage(images.read_bytes(path), name, max_side), None
    except images.ImageReadError as e:
      return name, None, e

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for start in range(0, len(files), _CHUNK):
      for name, stored, error in pool.map(check, files[start:start + _CHUNK]):
        if error is not None:
          _log.warning("prepare: skipping %s", error)
          skipped.append(name)
        else:
          yield name, stored


def _builder_class(name: str):
  """A GeneratorBasedBuilder class named `name`, built unregistered so any name can be reused."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class FolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Images of one folder (recursive) as a single 'train' split."""

    VERSION = tfds.core.Version(VERSION)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # pylint: disable=no-self-argument
      # No checksums or other files next to the code: the data are local. (tfds's own lookup
      # can fail for a class built at run time.)
      return None

    def __init__(self, *, files, max_side, num_threads, folder, **kwargs):
      self._files = files
      self._max_side = max_side
      self._num_threads = num_threads
      self._folder = folder
      self.skipped_files: list[str] = []
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          description=(f"Images of the folder {self._folder} prepared by `colorjax prepare`: "
                       "'image' holds each file's encoded bytes, 'name' its relative path."),
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(doc="the encoded image file"),
              "name": tfds.features.Text(doc="path relative to the prepared folder"),
          }),
          metadata=tfds.core.MetadataDict(),
      )

    def _split_generators(self, dl_manager):
      del dl_manager  # local files only
      return {SPLIT: self._generate_examples()}

    def _generate_examples(self):
      written = 0
      for record_name, stored in _checked_records(self._files, self._max_side, self._num_threads,
                                                  self.skipped_files):
        written += 1
        yield record_name, {"image": stored, "name": record_name}
      self.info.metadata["source_folder"] = str(self._folder)
      self.info.metadata["skipped_files"] = list(self.skipped_files)
      if not written:
        raise ValueError(f"no readable image in {self._folder} "
                         f"({len(self.skipped_files)} unreadable files)")

  FolderBuilder.name = name
  return FolderBuilder


def prepare_folder(folder: str | os.PathLike, out_dir: str | os.PathLike, *,
                   name: str = "colorjax_folder", max_side: int | None = None,
                   overwrite: bool = False, num_threads: int | None = None) -> pathlib.Path:
  """Writes the images of `folder` (recursive) as a tfds ArrayRecord dataset under `out_dir`.

  Args:
    folder: the image folder (see `images.list_images`).
    out_dir: the tfds data_dir; the dataset goes to `out_dir/name/1.0.0`.
    name: the dataset name (snake_case).
    max_side: shrink images whose longer side exceeds this (None keeps every file as it is).
    overwrite: replace an existing dataset of that name; otherwise an existing one is an error.
    num_threads: files decoded in parallel for validation (default: the CPU count).

  Returns:
    The dataset directory, to pass to `data.image_source` or `tfds.builder_from_directory`.

  Raises:
    FileNotFoundError: `folder` does not exist. FileExistsError: the dataset exists and not
    `overwrite`. ValueError: a bad name, or no readable image in the folder.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
    raise ValueError(f"dataset name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")
  if max_side is not None and max_side < 1:
    raise ValueError(f"max_side must be None or >= 1, got {max_side}")
  folder = pathlib.Path(folder).expanduser()
  if not folder.is_dir():
    raise FileNotFoundError(f"no such image folder: {folder}")
  files = images.list_images([folder])
  if not files:
    raise ValueError(f"no image files ({', '.join(sorted(images.IMAGE_SUFFIXES))}) in {folder}")
  dataset_dir = pathlib.Path(out_dir).expanduser().resolve() / name / VERSION
  if (dataset_dir / "dataset_info.json").exists() and not overwrite:
    raise FileExistsError(f"{dataset_dir} already exists; pass overwrite=True to replace it")

  builder = _builder_class(name)(
      files=files, max_side=max_side, num_threads=num_threads or os.cpu_count() or 1,
      folder=folder.resolve(), data_dir=str(pathlib.Path(out_dir).expanduser().resolve()),
      file_format="array_record")
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  try:
    with tempfile.TemporaryDirectory() as download_dir:  # tfds wants one; nothing is downloaded
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(download_mode=mode))
  except BaseException:
    if dataset_dir.parent.is_dir() and not any(dataset_dir.parent.iterdir()):
      dataset_dir.parent.rmdir()  # leave no empty `out_dir/name` behind a failed run
    raise
  written = builder.info.splits[SPLIT].num_examples
  _log.info("prepared %d images from %s into %s (%d unreadable skipped)", written, folder,
            builder.data_dir, len(builder.skipped_files))
  return pathlib.Path(builder.data_dir)


def skipped_files(dataset_dir: str | os.PathLike) -> list[str]:
  """The files `prepare_folder` left out as unreadable, from the dataset's metadata.json."""
  metadata_file = pathlib.Path(dataset_dir) / "metadata.json"
  if not metadata_file.exists():
    return []
  return list(json.loads(metadata_file.read_text()).get("skipped_files", []))
