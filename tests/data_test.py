"""Tests for colorjax.data: sources, the grain training iterator and evaluation batches."""
import logging
import pathlib

import numpy as np
import pytest
from PIL import Image

from colorjax import data, images

# Distinct, clearly colored values: a uniform image's every crop tells which file it came from.
_COLORS = [(200 - 11 * i, 40 + 9 * i, 90 + 13 * (i % 7)) for i in range(12)]


def _write_uniform_images(folder: pathlib.Path, colors, size=(40, 30)) -> list[str]:
  folder.mkdir(parents=True, exist_ok=True)
  names = []
  for i, rgb in enumerate(colors):
    name = f"sub{i % 2}/img{i:02d}.png"
    (folder / name).parent.mkdir(exist_ok=True)
    Image.new("RGB", size, rgb).save(folder / name)
    names.append(name)
  return names


def _color_of(crop_HW3: np.ndarray) -> tuple[int, int, int]:
  assert (crop_HW3 == crop_HW3[0, 0]).all(), "a crop of a uniform image must be uniform"
  return tuple(int(v) for v in crop_HW3[0, 0])


def _take(iterator, n):
  return [next(iterator)["rgb"] for _ in range(n)]


def _train_iterator(source, **overrides):
  kwargs = dict(batch_size_per_process=4, crop_size=32, seed=0, min_chroma=0.0,
                augment=dict(flip=True), num_threads=2)
  kwargs.update(overrides)
  return data.create_train_iterator(source, **kwargs)


# ------------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------------


def test_bundled_source_reads_the_package_photos(photos_dir):
  source = data.image_source("bundled")
  assert len(source) == len(list(photos_dir.glob("*.jpg")))
  encoded, name = source[0]
  assert encoded == (photos_dir / name).read_bytes()


def test_image_source_errors_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothing_here"):
    data.image_source(tmp_path / "nothing_here")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no image files"):
    data.image_source(tmp_path / "empty")


def test_split_source_is_deterministic_disjoint_and_stable(tmp_path):
  folder = tmp_path / "photos"
  names = _write_uniform_images(folder, _COLORS)
  train, held_out = data.split_source(str(folder), eval_fraction=0.3)
  train_names = {train[i][1] for i in range(len(train))}
  eval_names = {held_out[i][1] for i in range(len(held_out))}
  assert train_names.isdisjoint(eval_names)
  assert train_names | eval_names == set(names)
  assert eval_names  # at least one held out

  again_train, again_eval = data.split_source(data.image_source(folder), eval_fraction=0.3)
  assert {again_eval[i][1] for i in range(len(again_eval))} == eval_names
  # Adding a file does not move the others: the side is a hash of each relative name.
  Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "new.png")
  _, grown_eval = data.split_source(str(folder), eval_fraction=0.3)
  assert eval_names <= {grown_eval[i][1] for i in range(len(grown_eval))}

  same_train, same_eval = data.split_source(str(folder), eval_fraction=0.0)
  assert len(same_train) == len(same_eval) == len(names) + 1


# ------------------------------------------------------------------------------------------------
# Training iterator
# ------------------------------------------------------------------------------------------------


def test_train_batches_shape_dtype_and_determinism(photos_dir):
  source = data.image_source(photos_dir)
  first = _take(_train_iterator(source), 3)
  second = _take(_train_iterator(source), 3)
  other_seed = _take(_train_iterator(source, seed=1), 3)
  for batch in first:
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.uint8
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first, other_seed))
  assert set(next(_train_iterator(source)).keys()) == {"rgb"}


@pytest.fixture
def uniform_source(tmp_path):
  _write_uniform_images(tmp_path / "uniform", _COLORS)
  return data.image_source(tmp_path / "uniform")


def test_processes_get_disjoint_files(uniform_source):
  seen = []
  for process_index in range(3):
    iterator = _train_iterator(uniform_source, batch_size_per_process=1, num_epochs=1,
                               process_index=process_index, process_count=3)
    seen.append([_color_of(batch["rgb"][0]) for batch in iterator])
  assert [len(colors) for colors in seen] == [4, 4, 4]
  assert all(len(set(colors)) == 4 for colors in seen)  # one epoch: each file once
  union = set(seen[0]) | set(seen[1]) | set(seen[2])
  assert union == set(_COLORS)


def test_epochs_are_reshuffled_and_complete(uniform_source):
  iterator = _train_iterator(uniform_source, batch_size_per_process=1, num_epochs=2)
  colors = [_color_of(batch["rgb"][0]) for batch in iterator]
  assert len(colors) == 24
  assert set(colors[:12]) == set(colors[12:]) == set(_COLORS)
  assert colors[:12] != colors[12:]


def test_state_restore_resumes_identically(photos_dir):
  source = data.image_source(photos_dir)
  augment = dict(flip=True, vflip=True, rotate_degrees=15.0, blur_sigma=1.0, cutout=8)
  uninterrupted = _train_iterator(source, augment=augment)
  _take(uninterrupted, 3)
  state = uninterrupted.get_state()
  expected = _take(uninterrupted, 3)

  resumed = _train_iterator(source, augment=augment)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 3)):
    np.testing.assert_array_equal(a, b)
  assert resumed.stats.images == uninterrupted.stats.images


def _write_corrupt_files(folder: pathlib.Path, photos_dir) -> list[str]:
  jpeg = (photos_dir / "coffee.jpg").read_bytes()
  (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 4])
  (folder / "empty.png").write_bytes(b"")
  (folder / "notes.jpg").write_text("not an image")
  return ["empty.png", "notes.jpg", "truncated.jpg"]


def test_corrupt_files_are_skipped_counted_and_logged(tmp_path, photos_dir, caplog):
  folder = tmp_path / "mixed"
  _write_uniform_images(folder, _COLORS[:5])
  bad = _write_corrupt_files(folder, photos_dir)
  source = data.image_source(folder)
  assert len(source) == 8

  with caplog.at_level(logging.WARNING, logger="colorjax.data"):
    iterator = _train_iterator(source, batch_size_per_process=1, num_epochs=2)
    colors = [_color_of(batch["rgb"][0]) for batch in iterator]

  assert len(colors) == 10 and set(colors) == set(_COLORS[:5])
  assert iterator.stats.skipped == 6  # 3 bad files x 2 epochs
  assert sorted(iterator.stats.skipped_files) == bad
  assert "truncated.jpg" in iterator.stats.summary()
  for name in bad:
    assert any(name in record.getMessage() for record in caplog.records)


def test_skip_counts_survive_worker_processes(tmp_path, photos_dir):
  folder = tmp_path / "mixed"
  _write_uniform_images(folder, _COLORS[:5])
  _write_corrupt_files(folder, photos_dir)
  source = data.image_source(folder)
  in_process = _train_iterator(source, batch_size_per_process=2)
  expected = _take(in_process, 4)
  with_workers = _train_iterator(source, batch_size_per_process=2, num_workers=1)
  try:
    got = _take(with_workers, 4)
    state = with_workers.get_state()
  finally:
    with_workers.close()
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a, b)
  assert with_workers.stats.skipped == in_process.stats.skipped > 0
  assert state["skipped"] == in_process.stats.skipped


def test_near_gray_images_are_dropped(tmp_path):
  folder = tmp_path / "colors"
  _write_uniform_images(folder, _COLORS[:4])
  Image.new("RGB", (40, 30), (120, 120, 120)).save(folder / "gray.png")
  Image.new("L", (40, 30), 77).save(folder / "gray_l.png")
  gray_value = np.full((8, 8, 3), 120, np.uint8)
  assert images.chroma(gray_value) < 1.0 < min(
      images.chroma(np.full((8, 8, 3), c, np.uint8)) for c in _COLORS[:4])

  iterator = _train_iterator(data.image_source(folder), batch_size_per_process=1, num_epochs=1,
                             min_chroma=3.0)
  colors = [_color_of(batch["rgb"][0]) for batch in iterator]
  assert sorted(colors) == sorted(_COLORS[:4])
  assert iterator.stats.dropped_gray == 2


def test_all_unusable_raises_instead_of_looping(tmp_path):
  folder = tmp_path / "grays"
  folder.mkdir()
  for i in range(3):
    Image.new("L", (20, 20), 50 * i).save(folder / f"g{i}.png")
  iterator = _train_iterator(data.image_source(folder), batch_size_per_process=1, min_chroma=3.0)
  with pytest.raises(ValueError, match="no usable training image"):
    next(iterator)


def test_random_crop_resize_and_augmentations_keep_content(tmp_path):
  folder = tmp_path / "one"
  folder.mkdir()
  Image.new("RGB", (90, 50), (210, 60, 30)).save(folder / "red.png")
  source = data.image_source(folder)

  rotated = _take(_train_iterator(source, batch_size_per_process=2,
                                  augment=dict(rotate_degrees=45.0, flip=True)), 3)
  # The crop comes from inside the rotated picture: no empty (black) corners.
  assert all((batch == np.array([210, 60, 30], np.uint8)).all() for batch in rotated)

  cut = np.concatenate(_take(_train_iterator(source, augment=dict(cutout=8)), 2))
  gray = (cut == data.CUTOUT_FILL).all(axis=-1).sum(axis=(1, 2))
  assert ((gray >= 16) & (gray <= 64)).all()  # an 8x8 square, clipped at most to 4x4


def test_crop_comes_from_the_resized_image(tmp_path):
  # Left half red, right half blue, 120x40: the short side is resized to 32 (96x32), so a 32x32
  # crop of it holds at most two colors with the boundary where the resize puts it.
  folder = tmp_path / "halves"
  folder.mkdir()
  pixels = np.zeros((40, 120, 3), np.uint8)
  pixels[:, :60] = (255, 0, 0)
  pixels[:, 60:] = (0, 0, 255)
  Image.fromarray(pixels).save(folder / "halves.png")
  batch = next(_train_iterator(data.image_source(folder), augment=dict(flip=False)))["rgb"]
  assert batch.shape == (4, 32, 32, 3)
  resized = np.asarray(Image.fromarray(pixels).resize((96, 32), Image.BILINEAR))
  windows = [resized[:, x:x + 32] for x in range(96 - 32 + 1)]
  for crop in batch:
    assert any(np.array_equal(crop, window) for window in windows)


def test_bad_arguments_are_clear_errors(photos_dir):
  source = data.image_source(photos_dir)
  with pytest.raises(ValueError, match="process_index"):
    _train_iterator(source, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="cutout"):
    _train_iterator(source, augment=dict(cutout=64))
  with pytest.raises(ValueError, match="rotate_degrees"):
    _train_iterator(source, augment=dict(rotate_degrees="lots"))


# ------------------------------------------------------------------------------------------------
# Evaluation batches
# ------------------------------------------------------------------------------------------------


def test_eval_batches_center_crop_and_padding(tmp_path):
  folder = tmp_path / "eval"
  folder.mkdir()
  rng = np.random.default_rng(0)
  arrays = {}
  for i in range(5):
    pixels = rng.integers(0, 256, (16, 24 + 2 * i, 3), dtype=np.uint8)  # short side is already 16
    arrays[f"e{i}.png"] = pixels
    Image.fromarray(pixels).save(folder / f"e{i}.png")
  (folder / "z_broken.png").write_bytes(b"")

  stats = data.DataStats()
  batches = list(data.create_eval_batches(str(folder), image_size=16, batch_size=4, stats=stats))

  assert len(batches) == 2
  for batch in batches:
    assert batch["rgb"].shape == (4, 16, 16, 3) and batch["rgb"].dtype == np.uint8
    assert batch["mask"].shape == (4,) and batch["mask"].dtype == bool
    assert len(batch["name"]) == 4
  np.testing.assert_array_equal(batches[1]["mask"], [True, False, False, False])
  names = [n for b in batches for n, m in zip(b["name"], b["mask"]) if m]
  assert names == [f"e{i}.png" for i in range(5)]
  rows = [r for b in batches for r, m in zip(b["rgb"], b["mask"]) if m]
  for name, rgb in zip(names, rows):
    pixels = arrays[name]
    left = (pixels.shape[1] - 16) // 2
    np.testing.assert_array_equal(rgb, pixels[:, left:left + 16])
  assert not batches[1]["rgb"][1:].any()
  assert stats.skipped == 1 and stats.skipped_files == ["z_broken.png"]


def test_eval_batches_resize_short_side(photos_dir):
  batch = next(data.create_eval_batches(data.image_source(photos_dir), image_size=24,
                                        batch_size=2))
  expected = Image.open(photos_dir / batch["name"][0]).convert("RGB")
  width, height = expected.size
  scale = 24 / min(width, height)
  expected = expected.resize((round(width * scale), round(height * scale)), Image.BICUBIC)
  left, top = (expected.size[0] - 24) // 2, (expected.size[1] - 24) // 2
  expected = np.asarray(expected.crop((left, top, left + 24, top + 24)))
  np.testing.assert_array_equal(batch["rgb"][0], expected)
