"""Tests of colorjax.prior: the dataset prior over the 313 bins and its file handling."""
import json

import numpy as np
import pytest
from PIL import Image

from colorjax import color, prior
from colorjax import workdir as workdir_lib


def test_prior_of_bundled_photos_is_a_smoothed_distribution():
  p = prior.compute_prior("bundled", image_size=32, max_images=6, progress=False)
  assert p.shape == (313,) and p.sum() == pytest.approx(1.0, abs=1e-5) and p.min() >= 0
  assert np.isfinite(color.rebalance_weights(p)).all()


def test_prior_peaks_at_the_color_of_a_flat_image(tmp_path):
  Image.new("RGB", (20, 20), (200, 60, 40)).save(tmp_path / "red.png")
  (tmp_path / "broken.jpg").write_bytes(b"nope")
  p = prior.compute_prior(tmp_path, progress=False)
  ab = color.rgb_to_lab(np.array([[[200, 60, 40]]], np.uint8))[0, 0, 1:]
  assert p.argmax() == int(color.nearest_bin(ab))


def test_load_or_compute_caches_in_the_workdir_and_checks_files(tmp_path):
  first = prior.load_or_compute("", tmp_path, "bundled", image_size=16)
  assert (tmp_path / workdir_lib.PRIOR_FILE).is_file()
  np.testing.assert_allclose(prior.load_or_compute("", tmp_path, None), first, rtol=1e-5)
  np.save(tmp_path / "bad.npy", np.ones(10))
  with pytest.raises(ValueError, match="bad.npy"):
    prior.load_prior(tmp_path / "bad.npy")
  with pytest.raises(FileNotFoundError, match="loss.prior_file"):
    prior.load_prior(tmp_path / "missing.npy")


def _sorted_by_class(folder, per_class=60):
  """An ImageNet-style folder: class `a_red/` (reddish photos) sorts before `b_blue/`."""
  rng = np.random.default_rng(0)
  for name, rgb in (("a_red", (200, 40, 40)), ("b_blue", (40, 60, 200))):
    (folder / name).mkdir(parents=True)
    for i in range(per_class):
      noisy = np.clip(np.array(rgb) + rng.integers(-20, 21, (8, 8, 3)), 0, 255).astype(np.uint8)
      Image.fromarray(noisy).save(folder / name / f"{i:03d}.png")


def _total_variation(p, q):
  return 0.5 * float(np.abs(np.asarray(p, np.float64) - q).sum())


def test_a_sample_of_a_folder_sorted_by_class_has_the_whole_folders_prior(tmp_path):
  folder = tmp_path / "data"
  _sorted_by_class(folder)
  whole = prior.compute_prior(folder, progress=False)
  workdir = tmp_path / "wd"
  sampled = prior.load_or_compute("", workdir, str(folder), image_size=8, max_images=40, seed=3)
  # The first 40 records are all red: the prior of the red class alone is half a set away.
  red_only = prior.compute_prior(folder / "a_red", progress=False)
  assert _total_variation(red_only, whole) > 0.45
  assert _total_variation(sampled, whole) < 0.15
  assert json.loads((workdir / workdir_lib.PRIOR_SAMPLE_FILE).read_text()) == {
      "records": 120, "sampled": 40, "seed": 3, "image_size": 8}
  # Another seed draws other images, all of them when the sample covers the set.
  np.testing.assert_allclose(prior.compute_prior(folder, max_images=120, seed=1, progress=False),
                             whole, rtol=1e-6)
  assert not np.array_equal(prior.sample_indices(120, 40, 3), prior.sample_indices(120, 40, 4))


def test_cli_prior_samples_max_images_at_random(tmp_path, monkeypatch):
  from colorjax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  _sorted_by_class(tmp_path / "data")
  assert cli.main(["prior", "data", "p.npy", "--max-images", "40", "--seed", "3"]) == 0
  np.testing.assert_allclose(
      np.load("p.npy"), prior.compute_prior("data", max_images=40, seed=3, progress=False),
      rtol=1e-6)
  assert _total_variation(np.load("p.npy"), prior.compute_prior("data", progress=False)) < 0.15
  assert cli.main(["prior", "data", "p.npy", "--max-images", "0"]) == 2
