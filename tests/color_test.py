"""Tests of colorjax.color against independent references (skimage, scipy, torch, closed forms)."""
import itertools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import scipy.ndimage
import scipy.special
from skimage import color as skcolor

from colorjax import color

TOLERANCE = 1e-3
PHOTOS_DIR = pathlib.Path(color.__file__).parent / "assets" / "photos"

# The ECCV16 gamut table as the requirement states it: a -> inclusive b range, step 10.
SPEC_B_RANGES = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100),
    -40: (-40, 100), -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100),
    10: (-80, 90), 20: (-80, 90), 30: (-90, 90), 40: (-100, 90), 50: (-100, 80),
    60: (-110, 80), 70: (-110, 80), 80: (-110, 70), 90: (-110, 70), 100: (-90, 0),
}

_jit_rgb_to_lab = jax.jit(color.rgb_to_lab)
_jit_lab_to_rgb = jax.jit(color.lab_to_rgb)


@pytest.fixture(scope="module")
def photo_pixels():
  """Every pixel of the bundled photos, as one uint8 (1, N, 3) image."""
  pixels = [np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3)
            for p in sorted(PHOTOS_DIR.glob("*.jpg"))]
  assert len(pixels) >= 20
  return np.concatenate(pixels)[None]


@pytest.fixture(scope="module")
def dense_colors():
  """A dense sample of the 2^24 8-bit colors, uint8 (1, N, 3): a 52^3 grid (step 5, both ends
  included), 100k random colors, every gray, the cube's corners and the pure primaries."""
  grid = np.arange(0, 256, 5, dtype=np.uint8)
  grid_colors = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
  random_colors = np.random.default_rng(0).integers(0, 256, (100_000, 3), dtype=np.uint8)
  grays = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
  corners = np.array(list(itertools.product((0, 255), repeat=3)), np.uint8)
  primaries = np.array([[v if i == c else 0 for i in range(3)] for c in range(3)
                        for v in (1, 128, 254, 255)], np.uint8)
  colors = np.concatenate([grid_colors, random_colors, grays, corners, primaries])
  assert 255 in grid_colors and len(grid_colors) == 52**3
  return colors[None]


# ------------------------------------------------------------------------------------------------
# sRGB <-> Lab
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pixels", ["photo_pixels", "dense_colors"])
def test_rgb_to_lab_matches_skimage(pixels, request):
  rgb_u8 = request.getfixturevalue(pixels)
  expected = skcolor.rgb2lab(rgb_u8)
  from_uint8 = color.rgb_to_lab(rgb_u8)
  from_float = color.rgb_to_lab(rgb_u8.astype(np.float32) / 255.0)
  assert isinstance(from_uint8, np.ndarray) and from_uint8.dtype == np.float32
  np.testing.assert_allclose(from_uint8, expected, atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(from_float, expected, atol=TOLERANCE, rtol=0)
  from_jax = _jit_rgb_to_lab(jnp.asarray(rgb_u8))
  assert isinstance(from_jax, jax.Array) and from_jax.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(from_jax), expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("pixels", ["photo_pixels", "dense_colors"])
def test_lab_to_rgb_matches_skimage(pixels, request):
  lab = skcolor.rgb2lab(request.getfixturevalue(pixels)).astype(np.float32)
  expected = skcolor.lab2rgb(lab.astype(np.float64))
  from_numpy = color.lab_to_rgb(lab)
  assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float32
  np.testing.assert_allclose(from_numpy, expected, atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(np.asarray(_jit_lab_to_rgb(jnp.asarray(lab))), expected,
                             atol=TOLERANCE, rtol=0)


def test_round_trip_returns_every_8bit_color(dense_colors):
  rgb = color.lab_to_rgb(color.rgb_to_lab(dense_colors))
  np.testing.assert_array_equal(color.rgb_to_uint8(rgb), dense_colors)


def test_out_of_gamut_lab_is_clipped_as_skimage_does():
  rng = np.random.default_rng(1)
  lab = np.stack([rng.uniform(0, 100, 50_000), rng.uniform(-128, 127, 50_000),
                  rng.uniform(-128, 127, 50_000)], -1).astype(np.float32)[None]
  with pytest.warns(UserWarning):  # skimage warns about the negative Z it clips
    expected = skcolor.lab2rgb(lab.astype(np.float64))
  got = color.lab_to_rgb(lab)
  assert got.min() == 0.0 and got.max() == 1.0
  np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(np.asarray(_jit_lab_to_rgb(jnp.asarray(lab))), expected,
                             atol=TOLERANCE, rtol=0)
  # Out-of-gamut: most of these samples; they must land on the cube's faces.
  assert np.mean(np.any((expected == 0) | (expected == 1), axis=-1)) > 0.5


def test_batched_leading_axes():
  rgb = np.random.default_rng(2).uniform(0, 1, (2, 3, 5, 4, 3)).astype(np.float32)
  lab = color.rgb_to_lab(rgb)
  assert lab.shape == rgb.shape
  np.testing.assert_allclose(lab, skcolor.rgb2lab(rgb.reshape(-1, 4, 3)).reshape(rgb.shape),
                             atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(color.lab_to_rgb(lab), rgb, atol=TOLERANCE, rtol=0)


def test_gray_ab_equals_skimage_and_is_near_zero():
  grays = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None]
  ab = color.rgb_to_lab(grays)[..., 1:]
  np.testing.assert_allclose(ab, skcolor.rgb2lab(grays)[..., 1:], atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(_jit_rgb_to_lab(jnp.asarray(grays)))[..., 1:],
                             skcolor.rgb2lab(grays)[..., 1:], atol=1e-4, rtol=0)
  # skimage's own residue: its white point (0.95047, 1, 1.08883) is not the row sums of its
  # sRGB -> XYZ matrix (0.950456, 1, 1.088754), which leaves |ab| up to 4.7e-3 at white.
  assert np.abs(ab).max() < 5e-3


# ------------------------------------------------------------------------------------------------
# Normalisations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convention, expected", [
    ("eccv16", {0.0: -0.5, 50.0: 0.0, 100.0: 0.5}),
    ("pix2pix", {0.0: -1.0, 50.0: 0.0, 100.0: 1.0}),
])
def test_l_normalisation(convention, expected):
  l = np.array(list(expected), np.float32)
  np.testing.assert_allclose(color.normalize_l(l, convention), list(expected.values()), atol=1e-7)
  l = np.random.default_rng(3).uniform(0, 100, 1000).astype(np.float32)
  np.testing.assert_allclose(color.denormalize_l(color.normalize_l(l, convention), convention), l,
                             atol=1e-4)
  np.testing.assert_allclose(
      np.asarray(color.normalize_l(jnp.asarray(l), convention)), color.normalize_l(l, convention),
      atol=1e-6)


def test_ab_normalisation_and_unknown_convention():
  ab = np.array([[-110.0, 110.0], [0.0, 55.0]], np.float32)
  np.testing.assert_allclose(color.normalize_ab(ab), [[-1.0, 1.0], [0.0, 0.5]], atol=1e-7)
  np.testing.assert_allclose(color.denormalize_ab(color.normalize_ab(ab)), ab, atol=1e-5)
  with pytest.raises(ValueError, match="imagenet"):
    color.normalize_l(np.zeros(2), "imagenet")
  with pytest.raises(ValueError, match="imagenet"):
    color.denormalize_l(np.zeros(2), "imagenet")


# ------------------------------------------------------------------------------------------------
# The 313 ab bins
# ------------------------------------------------------------------------------------------------


def test_ab_bins_follow_the_published_table():
  bins = color.AB_BINS
  assert bins.shape == (313, 2) and bins.dtype == np.float32 and color.Q == 313
  np.testing.assert_array_equal(bins[:6], [[-90, 50], [-90, 60], [-90, 70], [-90, 80], [-90, 90],
                                           [-80, 20]])
  np.testing.assert_array_equal(bins[-1], [100, 0])
  assert np.all(np.diff(bins[:, 0]) >= 0)  # a ascending
  assert np.all(bins % 10 == 0)
  assert len({tuple(b) for b in bins.tolist()}) == 313
  for a, (lo, hi) in SPEC_B_RANGES.items():
    b = bins[bins[:, 0] == a, 1]
    np.testing.assert_array_equal(b, np.arange(lo, hi + 1, 10), err_msg=f"a={a}")
  assert sorted(set(bins[:, 0].tolist())) == list(range(-90, 101, 10))


def _brute_force_distances(ab):
  return np.linalg.norm(ab[..., None, :].astype(np.float64) - color.AB_BINS.astype(np.float64),
                        axis=-1)


def test_nearest_bin_agrees_with_brute_force():
  rng = np.random.default_rng(4)
  ab = rng.uniform(-130, 130, (50, 40, 2)).astype(np.float32)
  expected = np.argmin(_brute_force_distances(ab), axis=-1)
  got = color.nearest_bin(ab)
  assert got.shape == (50, 40) and got.dtype == np.int32
  np.testing.assert_array_equal(got, expected)
  np.testing.assert_array_equal(np.asarray(jax.jit(color.nearest_bin)(jnp.asarray(ab))), expected)
  # Every bin centre is its own nearest bin; integer points (ties possible) get a nearest one.
  np.testing.assert_array_equal(color.nearest_bin(color.AB_BINS), np.arange(313))
  grid = np.stack(np.meshgrid(np.arange(-120, 121, 3), np.arange(-120, 121, 3)), -1)
  distances = _brute_force_distances(grid.astype(np.float32))
  chosen = np.take_along_axis(distances, color.nearest_bin(grid.astype(np.float32))[..., None], -1)
  np.testing.assert_allclose(chosen[..., 0], distances.min(-1), atol=1e-4)


def test_nearest_bin_numpy_is_the_exact_nearest_bin_and_takes_the_first_of_ties():
  rng = np.random.default_rng(7)
  # Everywhere in and far outside the gamut, and on the half-way lines between bin centres
  # (multiples of 5), where two or four bins tie and argmin takes the first in the bin order.
  random = rng.uniform(-140, 140, (60, 50, 2)).astype(np.float32)
  ties = np.stack(np.meshgrid(np.arange(-125, 126, 5.0), np.arange(-125, 126, 5.0)), -1)
  for ab in (random, ties.astype(np.float32), color.AB_BINS):
    expected = np.argmin(_brute_force_distances(ab), axis=-1)
    got = color.nearest_bin_numpy(ab)
    assert got.shape == ab.shape[:-1]
    np.testing.assert_array_equal(got, expected)
  assert color.nearest_bin_numpy(np.array([np.nan, 0.0])) == 0  # as argmin over NaN distances


def test_lightness_is_rgb_to_lab_l_exactly(photos_dir):
  photo = np.asarray(Image.open(photos_dir / "data_butterfly.jpg").convert("RGB"))
  for rgb in (photo, photo[::3, 1::2], photo.astype(np.float32) / 255.0,
              np.random.default_rng(8).uniform(0, 1, (7, 5, 3)).astype(np.float32)):
    np.testing.assert_array_equal(color.lightness(rgb), color.rgb_to_lab(rgb)[..., :1])


@pytest.mark.parametrize("k, sigma", [(5, 5.0), (10, 5.0), (3, 8.0), (1, 5.0)])
def test_soft_encode_gaussian_on_k_nearest(k, sigma):
  rng = np.random.default_rng(5)
  ab = rng.uniform(-100, 100, (200, 2)).astype(np.float32)
  encoded = color.soft_encode(ab, k=k, sigma=sigma)
  assert encoded.shape == (200, 313) and encoded.dtype == np.float32
  np.testing.assert_allclose(encoded.sum(-1), 1.0, atol=1e-6)
  distances = _brute_force_distances(ab)
  nearest_k = np.argsort(distances, axis=-1)[:, :k]
  for i in range(len(ab)):
    support = np.flatnonzero(encoded[i])
    assert sorted(support) == sorted(nearest_k[i]), i
    weights = np.exp(-distances[i, support] ** 2 / (2 * sigma**2))
    np.testing.assert_allclose(encoded[i, support], weights / weights.sum(), rtol=1e-4, atol=1e-7)
  from_jax = np.asarray(color.soft_encode(jnp.asarray(ab), k=k, sigma=sigma))
  np.testing.assert_allclose(from_jax, encoded, atol=1e-6)


def test_soft_encode_exact_gaussian_ratios_for_a_point():
  ab = np.array([3.0, 6.0], np.float32)
  # The 5 nearest bins of (3, 6) and their squared distances, worked out by hand (the 6th and
  # 7th, (0, 20) and (-10, 0), are at 205).
  expected_d2 = {(0, 10): 9 + 16, (0, 0): 9 + 36, (10, 10): 49 + 16, (10, 0): 49 + 36,
                 (-10, 10): 169 + 16}
  encoded = color.soft_encode(ab, k=5, sigma=5.0)
  index = {tuple(b): i for i, b in enumerate(color.AB_BINS.astype(int).tolist())}
  assert set(np.flatnonzero(encoded)) == {index[b] for b in expected_d2}
  for (b1, d1), (b2, d2) in itertools.combinations(expected_d2.items(), 2):
    ratio = encoded[index[b1]] / encoded[index[b2]]
    np.testing.assert_allclose(ratio, np.exp(-(d1 - d2) / (2 * 5.0**2)), rtol=1e-5)


def test_soft_encode_far_outside_gamut_does_not_underflow():
  encoded = color.soft_encode(np.array([[300.0, -300.0]], np.float32), k=5, sigma=1.0)
  assert np.all(np.isfinite(encoded))
  np.testing.assert_allclose(encoded.sum(), 1.0, atol=1e-6)


def _grid_reference_smoothing(prob, sigma):
  """Gaussian filter of the prior placed on the 10-unit ab grid (zero outside the bins)."""
  cells = ((color.AB_BINS + 120) // 10).astype(int)
  grid = np.zeros((25, 25))
  grid[cells[:, 0], cells[:, 1]] = prob
  smoothed = scipy.ndimage.gaussian_filter(grid, sigma / 10.0, mode="constant", truncate=8.0)
  at_bins = smoothed[cells[:, 0], cells[:, 1]]
  return at_bins / at_bins.sum()


def test_smooth_prior_matches_a_gaussian_filter_and_stays_normalised():
  prob = np.random.default_rng(6).dirichlet(np.full(313, 0.3))
  smoothed = color.smooth_prior(prob, sigma=5.0)
  assert smoothed.shape == (313,)
  np.testing.assert_allclose(smoothed.sum(), 1.0, atol=1e-5)
  np.testing.assert_allclose(smoothed, _grid_reference_smoothing(prob, 5.0), rtol=1e-4, atol=1e-8)
  with pytest.raises(ValueError):
    color.smooth_prior(np.zeros(313))
  with pytest.raises(ValueError):
    color.smooth_prior(np.ones(300))


def test_smooth_prior_spreads_a_delta_with_the_gaussian_profile():
  centre = int(np.flatnonzero((color.AB_BINS == [0, 0]).all(-1))[0])
  delta = np.zeros(313)
  delta[centre] = 1.0
  for sigma in (5.0, 10.0):
    smoothed = color.smooth_prior(delta, sigma=sigma)
    d2 = np.sum((color.AB_BINS - color.AB_BINS[centre]) ** 2, axis=-1)
    profile = np.exp(-d2 / (2 * sigma**2))
    np.testing.assert_allclose(smoothed, profile / profile.sum(), rtol=1e-4, atol=1e-10)
    # The four grid neighbours (distance 10) get exp(-100 / 2 sigma^2) of the centre.
    neighbours = np.flatnonzero(d2 == 100)
    assert len(neighbours) == 4
    np.testing.assert_allclose(smoothed[neighbours] / smoothed[centre],
                               np.exp(-100 / (2 * sigma**2)), rtol=1e-4)


def test_rebalance_weights():
  prior = np.random.default_rng(7).dirichlet(np.full(313, 0.5)).astype(np.float32) + 1e-6
  prior /= prior.sum()
  for lam in (0.0, 0.3, 0.5, 1.0):
    w = color.rebalance_weights(prior, lam)
    np.testing.assert_allclose(np.sum(prior * w), 1.0, rtol=1e-5)
    order = np.argsort(prior)
    assert np.all(np.diff(w[order]) <= 1e-6 * w.max())  # rarer bins weigh at least as much
    expected = 1.0 / ((1 - lam) * prior.astype(np.float64) + lam / 313)
    np.testing.assert_allclose(w, expected / np.sum(prior * expected), rtol=1e-4)
    np.testing.assert_allclose(np.asarray(color.rebalance_weights(jnp.asarray(prior), lam)), w,
                               rtol=1e-5)
  np.testing.assert_allclose(color.rebalance_weights(prior, 1.0), 1.0, rtol=1e-5)
  np.testing.assert_allclose(prior * color.rebalance_weights(prior, 0.0), 1 / 313, rtol=1e-4)
  w = color.rebalance_weights(prior, 0.5)
  assert w[np.argmin(prior)] > w[np.argmax(prior)]


def test_annealed_mean_decoding():
  rng = np.random.default_rng(8)
  logits = rng.normal(0, 2, (6, 7, 313)).astype(np.float32)
  plain_mean = scipy.special.softmax(logits.astype(np.float64), axis=-1) @ color.AB_BINS
  np.testing.assert_allclose(color.decode_annealed_mean(logits, 1.0), plain_mean, atol=1e-3)
  for t in (0.38, 2.0):
    expected = scipy.special.softmax(logits.astype(np.float64) / t, axis=-1) @ color.AB_BINS
    np.testing.assert_allclose(color.decode_annealed_mean(logits, t), expected, atol=1e-3)
    np.testing.assert_allclose(np.asarray(color.decode_annealed_mean(jnp.asarray(logits), t)),
                               expected, atol=1e-3)
  mode = color.AB_BINS[np.argmax(logits, axis=-1)]
  np.testing.assert_array_equal(color.decode_mode(logits), mode)
  np.testing.assert_array_equal(np.asarray(color.decode_mode(jnp.asarray(logits))), mode)
  errors = [np.abs(color.decode_annealed_mean(logits, t) - mode).max() for t in (1.0, 0.3, 0.1)]
  assert errors[0] > errors[1] > errors[2]
  # With a clear winner (a margin of at least 1), a tiny temperature gives the mode.
  clear = logits + 1.0 * (logits == logits.max(-1, keepdims=True))
  np.testing.assert_allclose(color.decode_annealed_mean(clear, 0.005),
                             color.decode_mode(clear), atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Full-resolution rebuild
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("out_size", [(64, 48), (63, 37), (17, 5), (16, 12)])
def test_resize_ab_bilinear_matches_torch(out_size):
  torch = pytest.importorskip("torch")
  ab = np.random.default_rng(9).uniform(-100, 100, (16, 12, 2)).astype(np.float32)
  # In float64, so torch's float32 rounding of the source coordinates does not count.
  ab_12HW = torch.from_numpy(ab.astype(np.float64)).permute(2, 0, 1)[None]
  expected = torch.nn.functional.interpolate(
      ab_12HW, size=out_size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
  got = color.resize_ab_bilinear(ab, *out_size)
  assert got.shape == out_size + (2,)
  np.testing.assert_allclose(got, expected, atol=1e-4)


def test_colorize_with_ab_keeps_l_and_size(photos_dir):
  photo = np.asarray(Image.open(photos_dir / "data_fruits.jpg"))
  lab = skcolor.rgb2lab(photo)
  h, w = photo.shape[:2]

  own_ab = color.colorize_with_ab(photo, lab[..., 1:].astype(np.float32))
  assert own_ab.shape == photo.shape and own_ab.dtype == np.uint8
  assert np.abs(own_ab.astype(int) - photo).max() <= 1  # the image itself, up to rounding
  np.testing.assert_allclose(skcolor.rgb2lab(own_ab)[..., 0], lab[..., 0], atol=0.6)

  gray = color.colorize_with_ab(photo, np.zeros((h // 4, w // 4, 2), np.float32))
  assert gray.shape == photo.shape
  np.testing.assert_allclose(skcolor.rgb2lab(gray)[..., 0], lab[..., 0], atol=0.6)
  assert np.abs(gray.astype(int) - gray[..., :1]).max() <= 1

  # The image's own ab at 1/4 resolution: L is kept except where the blurred ab leaves the gamut.
  quarter_ab = color.resize_ab_bilinear(lab[..., 1:], h // 4, w // 4)
  rebuilt = color.colorize_with_ab(photo, quarter_ab)
  assert rebuilt.shape == photo.shape
  l_error = np.abs(skcolor.rgb2lab(rebuilt)[..., 0] - lab[..., 0])
  assert np.percentile(l_error, 95) < 0.6 and l_error.mean() < 0.3
