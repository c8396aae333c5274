"""Tests of colorjax.metrics against closed forms, skimage, scipy and brute-force numpy."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import skimage.metrics
from PIL import Image

from colorjax import color
from colorjax import metrics

_PHOTOS = ("astronaut.jpg", "data_baboon.jpg", "coffee.jpg")


def _photo_batch(photos_dir, size=(48, 64)) -> np.ndarray:
  """(3, H, W, 3) float32 RGB in [0, 1]: top-left crops of three real photos."""
  h, w = size
  crops = [np.asarray(Image.open(photos_dir / name).convert("RGB"))[:h, :w] for name in _PHOTOS]
  return np.stack(crops).astype(np.float32) / 255.0


def _perturbed(rgb: np.ndarray, seed: int = 0) -> np.ndarray:
  """A plausible wrong colorization: the photo with its ab halved and some noise, in [0, 1]."""
  lab = color.rgb_to_lab(rgb)
  lab[..., 1:] *= 0.5
  noise = np.random.default_rng(seed).normal(0.0, 0.03, rgb.shape)
  return np.clip(color.lab_to_rgb(lab) + noise, 0.0, 1.0).astype(np.float32)


def _ab_with_errors(errors, offset_ab=(5.0, -12.0)):
  """(1, 1, N, 2) true and predicted ab whose L2 error is exactly `errors[i]` at pixel i."""
  true = np.tile(np.asarray(offset_ab, np.float32), (1, 1, len(errors), 1))
  pred = true.copy()
  pred[..., 0] += np.asarray(errors, np.float32)
  return pred, true


def _brute_force_bins(ab) -> np.ndarray:
  d2 = np.sum((np.asarray(ab, np.float64)[..., None, :] - color.AB_BINS.astype(np.float64)) ** 2,
              axis=-1)
  return np.argmin(d2, axis=-1)


def _brute_force_auc(ab_pred, ab_true, weights) -> float:
  """Mean over thresholds 0..150 of the weighted share of pixels with error <= t, pooled."""
  error = np.linalg.norm(np.asarray(ab_pred, np.float64) - ab_true, axis=-1).ravel()
  weights = np.asarray(weights, np.float64).ravel()
  curve = [np.sum(weights * (error <= t)) / np.sum(weights) for t in range(151)]
  return float(np.mean(curve))


# ----------------------------------------------------------------------------------------------
# RGB fidelity
# ----------------------------------------------------------------------------------------------


def test_psnr_and_mse_match_closed_forms(photos_dir):
  true = _photo_batch(photos_dir)
  pred = _perturbed(true)
  expected_mse = np.mean((pred.astype(np.float64) - true) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(metrics.mse(pred, true), expected_mse, rtol=1e-5)
  np.testing.assert_allclose(metrics.psnr(pred, true), -10.0 * np.log10(expected_mse), rtol=1e-5)
  assert metrics.psnr(pred, true).shape == (3,)


def test_uint8_input_is_scaled_to_unit_range(photos_dir):
  true = _photo_batch(photos_dir)
  pred = _perturbed(true)
  pred_u8 = np.round(pred * 255).astype(np.uint8)
  true_u8 = np.round(true * 255).astype(np.uint8)
  np.testing.assert_allclose(metrics.mse(pred_u8, true_u8),
                             metrics.mse(pred_u8 / 255.0, true_u8 / 255.0), rtol=1e-5)


def test_ssim_matches_skimage_on_photos(photos_dir):
  true = _photo_batch(photos_dir)
  pred = _perturbed(true)
  expected = [
      skimage.metrics.structural_similarity(
          p.astype(np.float64), t.astype(np.float64), channel_axis=-1, data_range=1.0,
          gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
      for p, t in zip(pred, true)
  ]
  got = metrics.ssim(pred, true)
  assert got.shape == (3,)
  np.testing.assert_allclose(got, expected, atol=1e-4)
  np.testing.assert_allclose(metrics.ssim(true, true), 1.0, atol=1e-5)


def test_numpy_metrics_of_one_image_match_skimage_and_the_jax_metrics(photos_dir):
  true = _photo_batch(photos_dir)  # the shape of the jax tests above: compiled once
  pred = _perturbed(true)
  for p, t in zip(pred, true):
    expected_ssim = skimage.metrics.structural_similarity(
        p.astype(np.float64), t.astype(np.float64), channel_axis=-1, data_range=1.0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim_numpy(p, t) == pytest.approx(expected_ssim, abs=1e-4)
    assert metrics.ssim_numpy(p, t, metrics.ssim_statistics(t)) == metrics.ssim_numpy(p, t)
    mse = metrics.mse_numpy(p, t)
    assert mse == pytest.approx(skimage.metrics.mean_squared_error(t, p), rel=1e-5)
    assert metrics.psnr_from_mse(mse) == pytest.approx(
        skimage.metrics.peak_signal_noise_ratio(t.astype(np.float64), p.astype(np.float64),
                                                data_range=1.0), abs=1e-4)
  np.testing.assert_allclose([metrics.ssim_numpy(p, t) for p, t in zip(pred, true)],
                             metrics.ssim(pred, true), atol=1e-5)
  np.testing.assert_allclose([metrics.colorfulness_numpy(p) for p in pred],
                             metrics.colorfulness(pred), rtol=1e-5)
  assert metrics.psnr_from_mse(0.0) == float("inf")
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim_numpy(np.zeros((8, 32, 3)), np.zeros((8, 32, 3)))


def test_ssim_rejects_images_smaller_than_window():
  with pytest.raises(ValueError, match="at least 11x11"):
    metrics.ssim(np.zeros((1, 8, 32, 3), np.float32), np.zeros((1, 8, 32, 3), np.float32))


def test_bad_shapes_raise_clear_errors():
  with pytest.raises(ValueError, match=r"pred_rgb.*\(B, H, W, 3\)"):
    metrics.mse(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.mse(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3)))
  with pytest.raises(ValueError, match="ab_true"):
    metrics.auc(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 3)))
  with pytest.raises(ValueError, match="prior"):
    metrics.rebalanced_pixel_weights(np.zeros((1, 4, 4, 2)), np.ones(312))


# ----------------------------------------------------------------------------------------------
# AuC
# ----------------------------------------------------------------------------------------------


def test_auc_of_hand_example():
  # Errors 0, 10 and 200 Lab units: over t = 0..150 the first pixel is within every threshold
  # (151 of them), the second within t >= 10 (141), the third within none.
  pred, true = _ab_with_errors([0.0, 10.0, 200.0])
  counts, total = metrics.ab_accuracy_counts(pred, true)
  assert counts.shape == (1, 151) and total.shape == (1,)
  np.testing.assert_array_equal(counts[0, :10], 1.0)
  np.testing.assert_array_equal(counts[0, 10:], 2.0)
  np.testing.assert_allclose(metrics.auc(pred, true), [(151 + 141) / (3 * 151)], rtol=1e-6)


@pytest.mark.parametrize("error, expected", [
    (0.0, 1.0), (1.0, 150 / 151), (10.0, 141 / 151), (2.5, 148 / 151), (150.0, 1 / 151),
    (150.5, 0.0), (300.0, 0.0),
])
def test_auc_of_constant_error_has_closed_form(error, expected):
  pred, true = _ab_with_errors([error] * 6)
  np.testing.assert_allclose(metrics.auc(pred, true), [expected], rtol=1e-6, atol=1e-7)


def test_counts_accumulate_over_differently_sized_images():
  rng = np.random.default_rng(1)
  sizes = [(5, 7), (9, 4)]
  trues = [rng.uniform(-80, 80, (1, h, w, 2)).astype(np.float32) for h, w in sizes]
  preds = [t + rng.normal(0, 40, t.shape).astype(np.float32) for t in trues]
  weights = [rng.uniform(0, 2, t.shape[:3]).astype(np.float32) for t in trues]
  counts, totals = zip(*[metrics.ab_accuracy_counts(p, t, w)
                         for p, t, w in zip(preds, trues, weights)])
  pooled = metrics.auc_from_counts(sum(c.sum(0) for c in counts), sum(t.sum() for t in totals))
  expected = _brute_force_auc(np.concatenate([p.ravel() for p in preds]).reshape(-1, 2),
                              np.concatenate([t.ravel() for t in trues]).reshape(-1, 2),
                              np.concatenate([w.ravel() for w in weights]))
  np.testing.assert_allclose(pooled, expected, rtol=1e-5)


def test_counts_match_brute_force_comparison_for_custom_thresholds():
  rng = np.random.default_rng(2)
  true = rng.uniform(-60, 60, (2, 6, 5, 2)).astype(np.float32)
  pred = true + rng.normal(0, 20, true.shape).astype(np.float32)
  thresholds = np.array([0.0, 3.0, 7.5, 20.0, 55.0])
  counts, total = metrics.ab_accuracy_counts(pred, true, thresholds=thresholds)
  error = np.linalg.norm(pred.astype(np.float64) - true, axis=-1)
  expected = (error[..., None] <= thresholds).sum(axis=(1, 2))
  np.testing.assert_array_equal(counts, expected)
  np.testing.assert_array_equal(total, [30.0, 30.0])


def test_auc_from_counts_of_zero_weight_is_nan():
  assert np.isnan(metrics.auc_from_counts(np.zeros(151), 0.0))


def test_rebalanced_auc_equals_raw_auc_under_uniform_prior(photos_dir):
  true_ab = color.rgb_to_lab(_photo_batch(photos_dir))[..., 1:]
  pred_ab = color.rgb_to_lab(_perturbed(_photo_batch(photos_dir)))[..., 1:]
  uniform = np.full(color.Q, 1.0 / color.Q)
  weights = metrics.rebalanced_pixel_weights(true_ab, uniform)
  np.testing.assert_allclose(metrics.auc(pred_ab, true_ab, weights), metrics.auc(pred_ab, true_ab),
                             rtol=1e-5)


def test_rebalanced_auc_matches_brute_force_with_set_prior(photos_dir):
  true_ab = color.rgb_to_lab(_photo_batch(photos_dir))[..., 1:]
  pred_ab = color.rgb_to_lab(_perturbed(_photo_batch(photos_dir)))[..., 1:]
  bins = _brute_force_bins(true_ab)
  prior = np.bincount(bins.ravel(), minlength=color.Q) / bins.size
  np.testing.assert_allclose(metrics.empirical_prior(true_ab), prior, atol=1e-7)
  weights = metrics.rebalanced_pixel_weights(true_ab, prior)
  np.testing.assert_allclose(weights, 1.0 / prior[bins], rtol=1e-5)
  got = metrics.auc(pred_ab, true_ab, weights)
  for i in range(len(got)):
    np.testing.assert_allclose(got[i], _brute_force_auc(pred_ab[i], true_ab[i], weights[i]),
                               rtol=1e-5)


def test_rebalanced_weights_are_zero_for_bins_without_prior():
  true_ab = color.AB_BINS[None, None, :2]  # bins 0 and 1
  prior = np.zeros(color.Q)
  prior[1] = 0.25
  np.testing.assert_allclose(metrics.rebalanced_pixel_weights(true_ab, prior), [[[0.0, 4.0]]])


# ----------------------------------------------------------------------------------------------
# Colorfulness and bin accuracy
# ----------------------------------------------------------------------------------------------


def test_colorfulness_of_gray_is_zero():
  gray = np.random.default_rng(3).uniform(0, 1, (2, 16, 16, 1)).repeat(3, axis=-1)
  np.testing.assert_allclose(metrics.colorfulness(gray), 0.0, atol=1e-3)
  np.testing.assert_allclose(metrics.colorfulness((gray * 255).astype(np.uint8)), 0.0, atol=1e-3)


def test_colorfulness_matches_paper_formula_on_photos(photos_dir):
  rgb = _photo_batch(photos_dir)
  expected = []
  for image in rgb.astype(np.float64) * 255.0:
    r, g, b = image[..., 0].ravel(), image[..., 1].ravel(), image[..., 2].ravel()
    rg, yb = r - g, 0.5 * (r + g) - b
    expected.append(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
  np.testing.assert_allclose(metrics.colorfulness(rgb), expected, rtol=1e-4)
  # A tinted flat image has no spread, only the 0.3 * |mean| term (signed, not absolute).
  flat = np.broadcast_to(np.array([0.0, 1.0, 0.0], np.float32), (1, 4, 4, 3))
  np.testing.assert_allclose(metrics.colorfulness(flat), [0.3 * np.hypot(255.0, 127.5)], rtol=1e-5)


def test_top1_bin_accuracy_on_bin_centres():
  centres = color.AB_BINS.reshape(1, 1, color.Q, 2)
  np.testing.assert_allclose(metrics.top1_bin_accuracy(centres, centres), [1.0])
  # Moving the first 100 pixels onto the next bin's centre makes exactly those wrong.
  pred = centres.copy()
  pred[0, 0, :100] = color.AB_BINS[1:101]
  np.testing.assert_allclose(metrics.top1_bin_accuracy(pred, centres), [1 - 100 / color.Q],
                             rtol=1e-6)


def test_top1_bin_accuracy_from_logits():
  true_ab = color.AB_BINS.reshape(1, 1, color.Q, 2)
  labels = np.arange(color.Q)
  labels[:13] = (labels[:13] + 7) % color.Q
  logits = np.eye(color.Q, dtype=np.float32)[labels].reshape(1, 1, color.Q, color.Q) * 3.0 - 1.0
  np.testing.assert_allclose(metrics.top1_bin_accuracy_from_logits(logits, true_ab),
                             [1 - 13 / color.Q], rtol=1e-6)
  with pytest.raises(ValueError, match="logits"):
    metrics.top1_bin_accuracy_from_logits(logits[:, :, :10], true_ab)


# ----------------------------------------------------------------------------------------------
# image_metrics
# ----------------------------------------------------------------------------------------------


def test_image_metrics_jitted_matches_individual_metrics(photos_dir):
  true_rgb = _photo_batch(photos_dir, size=(24, 32))
  pred_rgb = _perturbed(true_rgb)
  true_ab = color.rgb_to_lab(true_rgb)[..., 1:]
  pred_ab = color.rgb_to_lab(pred_rgb)[..., 1:]
  prior = metrics.empirical_prior(true_ab)
  got = jax.jit(metrics.image_metrics)(pred_rgb, true_rgb, pred_ab, true_ab, prior)
  expected = {
      "psnr": metrics.psnr(pred_rgb, true_rgb),
      "ssim": metrics.ssim(pred_rgb, true_rgb),
      "mse": metrics.mse(pred_rgb, true_rgb),
      "auc": metrics.auc(pred_ab, true_ab),
      "auc_rebalanced": metrics.auc(pred_ab, true_ab,
                                    metrics.rebalanced_pixel_weights(true_ab, prior)),
      "colorfulness": metrics.colorfulness(pred_rgb),
      "top1_bin_accuracy": metrics.top1_bin_accuracy(pred_ab, true_ab),
  }
  assert set(got) == set(expected)
  for key, value in expected.items():
    assert got[key].shape == (3,), key
    np.testing.assert_allclose(got[key], value, rtol=1e-4, err_msg=key)
  without_prior = metrics.image_metrics(pred_rgb, true_rgb, pred_ab, true_ab)
  np.testing.assert_allclose(without_prior["auc_rebalanced"], got["auc_rebalanced"], rtol=1e-5)


def test_image_metrics_of_gray_baseline(photos_dir):
  true_rgb = _photo_batch(photos_dir, size=(24, 32))
  true_lab = color.rgb_to_lab(true_rgb)
  gray_lab = true_lab.copy()
  gray_lab[..., 1:] = 0.0
  gray_rgb = color.lab_to_rgb(gray_lab)
  got = metrics.image_metrics(gray_rgb, true_rgb, gray_lab[..., 1:], true_lab[..., 1:])
  chroma = np.linalg.norm(true_lab[..., 1:].astype(np.float64), axis=-1)
  expected_auc = [np.mean([np.mean(c <= t) for t in range(151)]) for c in chroma]
  np.testing.assert_allclose(got["auc"], expected_auc, rtol=1e-5)
  np.testing.assert_allclose(got["colorfulness"], 0.0, atol=0.5)
  assert np.all(np.asarray(got["auc_rebalanced"]) < np.asarray(got["auc"]))


# ----------------------------------------------------------------------------------------------
# FID math
# ----------------------------------------------------------------------------------------------


def _random_spd(rng, dim) -> np.ndarray:
  a = rng.normal(size=(dim, 2 * dim))
  return a @ a.T / (2 * dim) + 0.1 * np.eye(dim)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
  covmean = scipy.linalg.sqrtm(s1 @ s2).real
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2.0 * covmean))


@pytest.mark.parametrize("dim", [1, 4, 32])
def test_frechet_distance_matches_scipy_sqrtm(dim):
  rng = np.random.default_rng(dim)
  mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
  s1, s2 = _random_spd(rng, dim), _random_spd(rng, dim)
  expected = _scipy_frechet(mu1, s1, mu2, s2)
  got = metrics.frechet_distance(mu1, s1, mu2, s2)
  assert isinstance(got, float)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_frechet_distance_of_equal_covariances_is_mean_distance():
  rng = np.random.default_rng(5)
  s = _random_spd(rng, 16)
  mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
  np.testing.assert_allclose(metrics.frechet_distance(mu1, s, mu2, s), np.sum((mu1 - mu2) ** 2),
                             rtol=1e-8)


def test_frechet_distance_of_singular_covariances_is_finite_and_zero_for_self():
  rng = np.random.default_rng(6)
  mu, sigma = metrics.feature_statistics(rng.normal(size=(5, 12)))  # rank 4 < 12
  mu2, sigma2 = metrics.feature_statistics(rng.normal(size=(5, 12)))
  assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
  d = metrics.frechet_distance(mu, sigma, mu2, sigma2)
  assert np.isfinite(d) and d > 0


def test_feature_statistics_are_mean_and_unbiased_covariance():
  features = np.random.default_rng(7).normal(size=(50, 6)).astype(np.float32)
  mu, sigma = metrics.feature_statistics(features)
  centred = features.astype(np.float64) - features.astype(np.float64).sum(0) / 50
  np.testing.assert_allclose(mu, features.astype(np.float64).sum(0) / 50, rtol=1e-12)
  np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-10)
  assert mu.dtype == sigma.dtype == np.float64
  with pytest.raises(ValueError, match="N >= 2"):
    metrics.feature_statistics(features[:1])


# ----------------------------------------------------------------------------------------------
# Image grid
# ----------------------------------------------------------------------------------------------


def test_image_grid_places_each_image():
  rng = np.random.default_rng(8)
  row0 = [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(3)]
  row1 = [rng.uniform(0, 1, (4, 3, 3)), rng.uniform(0, 1, (4, 3, 3)), rng.uniform(0, 1, (4, 3, 3))]
  row1[0] = row1[0][..., 0]  # a gray HxW image is repeated to 3 channels
  grid = metrics.image_grid([row0, row1], separator_px=2)
  assert grid.dtype == np.uint8
  assert grid.shape == (6 + 2 + 4, 3 * 5 + 2 * 2, 3)
  for i, image in enumerate(row0):
    np.testing.assert_array_equal(grid[:6, i * 7:i * 7 + 5], image)
  np.testing.assert_array_equal(grid[:6, 5:7], 255)
  np.testing.assert_array_equal(grid[8:, 3:5], 255)
  np.testing.assert_array_equal(grid[6:8], 255)
  np.testing.assert_array_equal(grid[8:, 0:3], np.round(row1[0][..., None] * 255).repeat(3, -1))
  np.testing.assert_array_equal(grid[8:, 10:13], np.round(row1[2] * 255))
  np.testing.assert_array_equal(grid[8:, 13:], 255)  # padding right of the narrower row


def test_image_grid_rejects_mismatched_row():
  with pytest.raises(ValueError, match="row 0 images differ in size"):
    metrics.image_grid([[np.zeros((4, 4, 3)), np.zeros((4, 5, 3)), np.zeros((4, 4, 3))]])
