"""Tests of colorjax.prior: the dataset prior over the 313 bins and its file handling."""
import numpy as np
import pytest
from PIL import Image

from colorjax import color, prior


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
  assert (tmp_path / prior.PRIOR_FILE).is_file()
  np.testing.assert_allclose(prior.load_or_compute("", tmp_path, None), first, rtol=1e-5)
  np.save(tmp_path / "bad.npy", np.ones(10))
  with pytest.raises(ValueError, match="bad.npy"):
    prior.load_prior(tmp_path / "bad.npy")
  with pytest.raises(FileNotFoundError, match="loss.prior_file"):
    prior.load_prior(tmp_path / "missing.npy")
