"""Tests for colorjax.prepare: a folder -> a tfds ArrayRecord dataset read back through grain."""
import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from colorjax import data, images, prepare


@pytest.fixture
def folder(tmp_path, photos_dir):
  root = tmp_path / "photos"
  (root / "animals").mkdir(parents=True)
  for name in ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]:
    shutil.copy(photos_dir / name, root / name)
  shutil.copy(photos_dir / "astronaut.jpg", root / "animals" / "astronaut.jpg")
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 4), dtype=np.uint8),
                  mode="RGBA").save(root / "animals" / "alpha.png")
  jpeg = (photos_dir / "flower.jpg").read_bytes()
  (root / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 5])
  (root / "readme.jpg").write_text("not an image")
  return root


def _eval_images_by_name(source, image_size=32):
  by_name = {}
  for batch in data.create_eval_batches(source, image_size=image_size, batch_size=4):
    for rgb, name, valid in zip(batch["rgb"], batch["name"], batch["mask"]):
      if valid:
        by_name[name] = rgb
  return by_name


def test_prepared_dataset_matches_the_folder(folder, tmp_path):
  dataset_dir = prepare.prepare_folder(folder, tmp_path / "prepared", name="tiny_photos")

  assert dataset_dir == (tmp_path / "prepared" / "tiny_photos" / "1.0.0").resolve()
  assert list(dataset_dir.glob("*.array_record-*"))
  assert "tensorflow" not in sys.modules
  assert prepare.skipped_files(dataset_dir) == ["broken.jpg", "readme.jpg"]
  info = json.loads((dataset_dir / "dataset_info.json").read_text())
  assert info["name"] == "tiny_photos"

  prepared = data.image_source(dataset_dir)
  assert isinstance(prepared, data.TfdsSource)
  folder_source = data.image_source(folder)
  readable = {folder_source[i][1]: folder_source[i][0] for i in range(len(folder_source))
              if folder_source[i][1] not in ("broken.jpg", "readme.jpg")}
  # The stored bytes are the files themselves (lossless, a plain decode).
  assert {prepared[i][1]: prepared[i][0] for i in range(len(prepared))} == readable

  # The parent folders find the dataset too, and both sources feed the same images to grain.
  via_parent = data.image_source(tmp_path / "prepared")
  assert len(via_parent) == len(readable)
  from_folder = _eval_images_by_name(folder_source)
  from_prepared = _eval_images_by_name(via_parent)
  assert from_prepared.keys() == readable.keys()
  for name, rgb in from_prepared.items():
    np.testing.assert_array_equal(rgb, from_folder[name])

  batch = next(data.create_train_iterator(prepared, batch_size_per_process=2, crop_size=32,
                                          seed=0, min_chroma=3.0, num_threads=1))
  assert batch["rgb"].shape == (2, 32, 32, 3) and batch["rgb"].dtype == np.uint8


def test_max_side_shrinks_large_images_and_existing_dataset_needs_overwrite(folder, tmp_path):
  out_dir = tmp_path / "prepared"
  dataset_dir = prepare.prepare_folder(folder, out_dir, max_side=100)
  source = data.image_source(dataset_dir)
  shapes = {source[i][1]: images.decode_rgb(*source[i]).shape for i in range(len(source))}
  assert shapes["animals/alpha.png"] == (30, 50, 3)  # small enough: kept as it is
  assert shapes["chelsea.jpg"] == (67, 100, 3)  # 320x213 -> 100x67
  assert max(max(shape[:2]) for shape in shapes.values()) == 100

  with pytest.raises(FileExistsError, match="overwrite"):
    prepare.prepare_folder(folder, out_dir)
  dataset_dir = prepare.prepare_folder(folder, out_dir, overwrite=True)
  source = data.image_source(dataset_dir)
  assert max(images.decode_rgb(*source[i]).shape[1] for i in range(len(source))) == 320


def test_bad_inputs_are_clear_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing"):
    prepare.prepare_folder(tmp_path / "missing", tmp_path / "out")
  with pytest.raises(ValueError, match="snake_case"):
    prepare.prepare_folder(tmp_path, tmp_path / "out", name="Bad Name")
  only_bad = tmp_path / "only_bad"
  only_bad.mkdir()
  (only_bad / "x.jpg").write_bytes(b"")
  with pytest.raises(ValueError, match="no readable image"):
    prepare.prepare_folder(only_bad, tmp_path / "out")


def test_tfds_source_errors_name_split_and_feature(folder, tmp_path):
  dataset_dir = prepare.prepare_folder(folder, tmp_path / "prepared")
  with pytest.raises(ValueError, match="validation"):
    data.image_source(dataset_dir, split="validation")
  with pytest.raises(ValueError, match="pixels"):
    data.image_source(dataset_dir, image_key="pixels")
