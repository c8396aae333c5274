"""Evaluation metrics for colorization, as small pure functions.

Per-image metrics take batches and return one value per image, shape `(B,)`. They are written in
jax.numpy and can be jitted; numpy inputs work too (the result is then a jax array). RGB images
are float sRGB in [0, 1] (uint8 is accepted and divided by 255); ab values are in Lab units.

- `psnr`, `ssim` (dm-pix), `mse`: fidelity of the RGB result to the ground truth.
- `auc`, `ab_accuracy_counts`, `auc_from_counts`: raw accuracy AuC of Zhang, Isola & Efros,
  "Colorful Image Colorization", ECCV 2016 (share of pixels whose ab error is within a threshold,
  swept over 0..150). The counts form lets a whole dataset of differently-sized images be
  accumulated before the AuC is taken; `rebalanced_pixel_weights` turns it into the
  class-rebalanced AuC of the same paper.
- `colorfulness`: Hasler & Suesstrunk, "Measuring colourfulness in natural images", 2003.
- `top1_bin_accuracy`, `top1_bin_accuracy_from_logits`: agreement of the predicted ECCV16 bin with
  the ground truth's nearest bin.
- `feature_statistics`, `frechet_distance`: the math of FID (numpy float64, host side).
- `image_grid`: gray | model | truth rows for reports and TensorBoard (numpy, host side).
- `image_metrics`: all per-image metrics in one dictionary, for the evaluator.
"""
from __future__ import annotations

from typing import Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from colorjax import color

AUC_THRESHOLDS = np.arange(151, dtype=np.float32)
"""The ab error thresholds (Lab units) of the raw-accuracy curve: 0, 1, ..., 150."""

_SSIM_FILTER_SIZE = 11  # dm-pix's default window, also skimage's for sigma=1.5, truncate=3.5
SSIM_MIN_SIDE = _SSIM_FILTER_SIZE  # the smallest image side `ssim` (and so `colorjax eval`) takes


# ----------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------


def _rgb_batch(rgb_BHW3, name: str) -> jax.Array:
  """Float32 RGB in [0, 1] from float or uint8 input; raises on a shape other than (B, H, W, 3)."""
  rgb = jnp.asarray(rgb_BHW3)
  if rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f"{name}: expected an RGB batch of shape (B, H, W, 3), got {rgb.shape}")
  if rgb.dtype == jnp.uint8:
    return rgb.astype(jnp.float32) / 255.0
  return rgb.astype(jnp.float32)


def _ab_batch(ab_BHW2, name: str) -> jax.Array:
  ab = jnp.asarray(ab_BHW2, jnp.float32)
  if ab.ndim != 4 or ab.shape[-1] != 2:
    raise ValueError(f"{name}: expected an ab batch of shape (B, H, W, 2), got {ab.shape}")
  return ab


def _check_same_shape(a, b, names: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{names}: shapes differ, {a.shape} vs {b.shape}")


def _check_prior(prior_313) -> jax.Array:
  prior = jnp.asarray(prior_313, jnp.float32)
  if prior.shape != (color.Q,):
    raise ValueError(f"prior: expected shape ({color.Q},) over the ECCV16 bins, got {prior.shape}")
  return prior


# ----------------------------------------------------------------------------------------------
# RGB fidelity
# ----------------------------------------------------------------------------------------------


def psnr(pred_rgb_BHW3, true_rgb_BHW3) -> jax.Array:
  """Peak signal-to-noise ratio in dB, `(B,)`, with peak 1 (dm-pix); identical images give inf."""
  pred = _rgb_batch(pred_rgb_BHW3, "pred_rgb")
  true = _rgb_batch(true_rgb_BHW3, "true_rgb")
  _check_same_shape(pred, true, "pred_rgb, true_rgb")
  return dm_pix.psnr(pred, true)


def ssim(pred_rgb_BHW3, true_rgb_BHW3) -> jax.Array:
  """Structural similarity, `(B,)`, dm-pix defaults: Gaussian window 11 px, sigma 1.5, peak 1.

  The SSIM map is averaged over the valid window positions and the three channels.
  Images must be at least 11 x 11 pixels.
  """
  pred = _rgb_batch(pred_rgb_BHW3, "pred_rgb")
  true = _rgb_batch(true_rgb_BHW3, "true_rgb")
  _check_same_shape(pred, true, "pred_rgb, true_rgb")
  if min(pred.shape[1:3]) < _SSIM_FILTER_SIZE:
    raise ValueError(f"ssim: images must be at least {_SSIM_FILTER_SIZE}x{_SSIM_FILTER_SIZE} "
                     f"pixels, got {pred.shape[1]}x{pred.shape[2]}")
  return dm_pix.ssim(pred, true)


def mse(pred_rgb_BHW3, true_rgb_BHW3) -> jax.Array:
  """Mean squared error over pixels and channels of RGB in [0, 1], `(B,)`."""
  pred = _rgb_batch(pred_rgb_BHW3, "pred_rgb")
  true = _rgb_batch(true_rgb_BHW3, "true_rgb")
  _check_same_shape(pred, true, "pred_rgb, true_rgb")
  return jnp.mean((pred - true) ** 2, axis=(1, 2, 3))


# ----------------------------------------------------------------------------------------------
# Raw-accuracy AuC and its class-rebalanced form (Zhang et al. 2016)
# ----------------------------------------------------------------------------------------------


def ab_accuracy_counts(ab_pred_BHW2, ab_true_BHW2, pixel_weights_BHW=None,
                       thresholds=AUC_THRESHOLDS) -> tuple[jax.Array, jax.Array]:
  """Weighted pixel counts within each ab error threshold, for accumulating the AuC over a dataset.

  Args:
    ab_pred_BHW2: predicted ab, Lab units.
    ab_true_BHW2: ground-truth ab, Lab units, same shape.
    pixel_weights_BHW: optional non-negative weight per pixel (1 for every pixel if None); use
      `rebalanced_pixel_weights` for the class-rebalanced AuC, or 0 to mask pixels out.
    thresholds: `(T,)` ascending error thresholds in Lab units; default 0, 1, ..., 150.

  Returns:
    counts_BT: for each image and threshold t, the summed weight of pixels with |ab error| <= t.
    total_B: the summed weight of all pixels of each image.
  Sum both over images (`counts_BT.sum(0)`, `total_B.sum(0)`) and call `auc_from_counts` to get
  the AuC of a dataset in which every pixel counts equally.
  """
  pred = _ab_batch(ab_pred_BHW2, "ab_pred")
  true = _ab_batch(ab_true_BHW2, "ab_true")
  _check_same_shape(pred, true, "ab_pred, ab_true")
  batch = pred.shape[0]
  if pixel_weights_BHW is None:
    weights = jnp.ones(pred.shape[:3], jnp.float32)
  else:
    weights = jnp.asarray(pixel_weights_BHW, jnp.float32)
    if weights.shape != pred.shape[:3]:
      raise ValueError(f"pixel_weights: expected shape {pred.shape[:3]}, got {weights.shape}")
  thresholds = jnp.asarray(thresholds, jnp.float32)
  if thresholds.ndim != 1:
    raise ValueError(f"thresholds: expected a 1-D ascending array, got shape {thresholds.shape}")
  num_t = thresholds.shape[0]

  error = jnp.sqrt(jnp.sum((pred - true) ** 2, axis=-1))
  # Index of the first threshold that admits each pixel; a pixel then counts for that threshold
  # and all above it. A histogram of these indices plus a cumulative sum avoids a (B, H, W, T)
  # comparison tensor. Index T means "beyond every threshold" (NaN errors land there too).
  first_t = jnp.searchsorted(thresholds, error, side="left")
  segment = (jnp.arange(batch)[:, None, None] * (num_t + 1) + first_t).reshape(-1)
  hist = jax.ops.segment_sum(weights.reshape(-1), segment, num_segments=batch * (num_t + 1))
  counts = jnp.cumsum(hist.reshape(batch, num_t + 1)[:, :num_t], axis=-1)
  total = jnp.sum(weights, axis=(1, 2))
  return counts, total


def auc_from_counts(counts_T, total) -> jax.Array:
  """Normalised area under the accuracy curve, in [0, 1], from (accumulated) counts.

  The area is the mean of the curve values `counts / total` over the T thresholds: each threshold
  is a unit-width rectangle and the area is divided by T (151 by default). A perfect prediction
  scores 1, and with the default thresholds a constant integer error e in 0..150 scores
  (151 - e) / 151. The rectangle rule is chosen over the trapezoid rule because then every
  (pixel, threshold) pair counts equally, which makes the score a plain weighted mean over pixels
  of the share of thresholds a pixel meets; the two differ by at most 1/(2T) of the curve's end
  values (under 0.004 here).

  Broadcasts: `counts_T` of shape `(..., T)` with `total` of shape `(...)` gives `(...)`.
  A total weight of 0 (nothing to measure) gives NaN rather than a made-up score.
  """
  counts = jnp.asarray(counts_T, jnp.float32)
  total = jnp.asarray(total, jnp.float32)
  safe_total = jnp.where(total > 0, total, 1.0)
  area = jnp.mean(counts, axis=-1) / safe_total
  return jnp.where(total > 0, area, jnp.nan)


def auc(ab_pred_BHW2, ab_true_BHW2, pixel_weights_BHW=None) -> jax.Array:
  """Raw-accuracy AuC of each image, `(B,)` (see `auc_from_counts` for the normalisation).

  With `pixel_weights_BHW=rebalanced_pixel_weights(ab_true, prior)` it is the class-rebalanced AuC.
  """
  counts, total = ab_accuracy_counts(ab_pred_BHW2, ab_true_BHW2, pixel_weights_BHW)
  return auc_from_counts(counts, total)


def empirical_prior(ab_true_BHW2, pixel_weights_BHW=None) -> jax.Array:
  """Share of (weighted) pixels per ECCV16 bin, `(313,)` summing to 1 (jit-able).

  The nearest bin of each ground-truth ab is counted. For the class-rebalanced AuC of an
  evaluation set, accumulate this over the whole set (weighted by pixel counts) and pass it as the
  prior; it is deliberately not smoothed, so every bin that occurs has a positive probability.
  """
  true = _ab_batch(ab_true_BHW2, "ab_true")
  bins = color.nearest_bin(true).reshape(-1)
  weights = None if pixel_weights_BHW is None else jnp.asarray(pixel_weights_BHW,
                                                               jnp.float32).reshape(-1)
  counts = jnp.bincount(bins, weights=weights, length=color.Q).astype(jnp.float32)
  return counts / jnp.maximum(jnp.sum(counts), jnp.finfo(jnp.float32).tiny)


def rebalanced_pixel_weights(ab_true_BHW2, prior_313) -> jax.Array:
  """Per-pixel weights 1 / p(nearest bin of the ground truth), `(B, H, W)`.

  This is the rebalancing of Zhang et al. with lambda = 0. `prior_313` is a distribution over the
  313 ECCV16 bins (its scale does not matter for the AuC); normally the evaluation set's own prior
  (`empirical_prior`), under which every ground-truth bin has p > 0. Under another prior a pixel
  whose bin has p = 0 has no defined weight: it gets weight 0, i.e. it is left out of the
  rebalanced AuC, rather than an arbitrary huge weight.
  """
  true = _ab_batch(ab_true_BHW2, "ab_true")
  prior = _check_prior(prior_313)
  p = prior[color.nearest_bin(true)]
  positive = p > 0
  return jnp.where(positive, 1.0 / jnp.where(positive, p, 1.0), 0.0)


# ----------------------------------------------------------------------------------------------
# Colorfulness and bin accuracy
# ----------------------------------------------------------------------------------------------


def colorfulness(rgb_BHW3) -> jax.Array:
  """Colorfulness of Hasler & Suesstrunk (2003), `(B,)`, on RGB scaled to 0..255.

  The input (float in [0, 1] or uint8) is scaled to 0..255 here, since the paper's constants
  assume that range. The signed opponent channels are used, as in the paper:
  rg = R - G, yb = (R + G) / 2 - B, and
  C = sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2),
  with population standard deviations over the pixels of each image. (Some published code takes
  |R - G| and |yb| instead, which gives different values; this function does not.) Gray is 0.
  """
  rgb = _rgb_batch(rgb_BHW3, "rgb") * 255.0
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  rg = r - g
  yb = 0.5 * (r + g) - b
  axes = (1, 2)
  spread = jnp.sqrt(jnp.var(rg, axis=axes) + jnp.var(yb, axis=axes))
  offset = jnp.sqrt(jnp.mean(rg, axis=axes) ** 2 + jnp.mean(yb, axis=axes) ** 2)
  return spread + 0.3 * offset


def top1_bin_accuracy(ab_pred_BHW2, ab_true_BHW2) -> jax.Array:
  """Share of pixels, `(B,)`, whose predicted ab falls in the same ECCV16 bin as the truth's.

  Both are assigned to their nearest bin centre. For a model's 313-way output use
  `top1_bin_accuracy_from_logits`.
  """
  pred = _ab_batch(ab_pred_BHW2, "ab_pred")
  true = _ab_batch(ab_true_BHW2, "ab_true")
  _check_same_shape(pred, true, "ab_pred, ab_true")
  hit = color.nearest_bin(pred) == color.nearest_bin(true)
  return jnp.mean(hit.astype(jnp.float32), axis=(1, 2))


def top1_bin_accuracy_from_logits(logits_BHWQ, ab_true_BHW2) -> jax.Array:
  """Share of pixels, `(B,)`, whose argmax over the 313 logits is the truth's nearest bin.

  Logits (or probabilities) must be at the ground truth's resolution and in the ECCV16 bin order.
  """
  logits = jnp.asarray(logits_BHWQ)
  true = _ab_batch(ab_true_BHW2, "ab_true")
  if logits.shape != true.shape[:3] + (color.Q,):
    raise ValueError(f"logits: expected shape {true.shape[:3] + (color.Q,)} to match ab_true, "
                     f"got {logits.shape}")
  hit = jnp.argmax(logits, axis=-1) == color.nearest_bin(true)
  return jnp.mean(hit.astype(jnp.float32), axis=(1, 2))


# ----------------------------------------------------------------------------------------------
# One image of its own size on the host (numpy): `colorjax eval` at full resolution
# ----------------------------------------------------------------------------------------------
# The jax metrics above compile once per image shape; photos of mixed sizes would compile for
# every photo. These take one HxWx3 float32 image in [0, 1] and compute the same values in numpy
# (float32 maps, float64 sums), with nothing to compile.


def _ssim_window() -> np.ndarray:
  """dm-pix's 1-D Gaussian window: 11 taps, sigma 1.5, normalised to sum 1."""
  offsets = np.arange(_SSIM_FILTER_SIZE, dtype=np.float64) - _SSIM_FILTER_SIZE // 2
  window = np.exp(-0.5 * (offsets / 1.5) ** 2)
  return (window / window.sum()).astype(np.float32)


_SSIM_WINDOW = _ssim_window()


def _blur_valid(image_HWC: np.ndarray) -> np.ndarray:
  """Separable Gaussian blur over the positions where the whole window fits (dm-pix's 'valid')."""
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  half = _SSIM_FILTER_SIZE // 2
  rows = scipy.ndimage.correlate1d(image_HWC, _SSIM_WINDOW, axis=0, mode="constant")
  rows = rows[half:image_HWC.shape[0] - half]
  out = scipy.ndimage.correlate1d(rows, _SSIM_WINDOW, axis=1, mode="constant")
  return out[:, half:image_HWC.shape[1] - half]


def ssim_statistics(rgb_HW3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The blurred mean and blurred square of an image, to share between several `ssim_numpy`."""
  rgb = np.asarray(rgb_HW3, np.float32)
  return _blur_valid(rgb), _blur_valid(rgb * rgb)


def ssim_numpy(pred_rgb_HW3, true_rgb_HW3, true_statistics=None) -> float:
  """`ssim` of one image pair in numpy (same window, constants and variance clipping as dm-pix).

  `true_statistics` (`ssim_statistics(true_rgb_HW3)`) saves recomputing the ground truth's part
  when several predictions are compared with one truth.
  """
  pred = np.asarray(pred_rgb_HW3, np.float32)
  true = np.asarray(true_rgb_HW3, np.float32)
  if pred.shape != true.shape or pred.ndim != 3:
    raise ValueError(f"pred_rgb, true_rgb: expected two HxWxC images of one shape, got "
                     f"{pred.shape} and {true.shape}")
  if min(pred.shape[:2]) < _SSIM_FILTER_SIZE:
    raise ValueError(f"ssim: images must be at least {_SSIM_FILTER_SIZE}x{_SSIM_FILTER_SIZE} "
                     f"pixels, got {pred.shape[0]}x{pred.shape[1]}")
  mu_true, blur_true2 = true_statistics or ssim_statistics(true)
  mu_pred, blur_pred2 = ssim_statistics(pred)
  blur_cross = _blur_valid(pred * true)
  mu_pp, mu_tt, mu_pt = mu_pred * mu_pred, mu_true * mu_true, mu_pred * mu_true
  epsilon = np.finfo(np.float32).eps ** 2
  var_pred = np.maximum(epsilon, blur_pred2 - mu_pp)
  var_true = np.maximum(epsilon, blur_true2 - mu_tt)
  cov = blur_cross - mu_pt
  cov = np.sign(cov) * np.minimum(np.sqrt(var_pred * var_true), np.abs(cov))
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  ssim_map = ((2 * mu_pt + c1) * (2 * cov + c2)) / ((mu_pp + mu_tt + c1) * (var_pred + var_true + c2))
  return float(np.mean(ssim_map, dtype=np.float64))


def mse_numpy(pred_rgb_HW3, true_rgb_HW3) -> float:
  """`mse` of one image pair in numpy."""
  diff = np.asarray(pred_rgb_HW3, np.float32) - np.asarray(true_rgb_HW3, np.float32)
  return float(np.mean(np.square(diff), dtype=np.float64))


def psnr_from_mse(mse_value: float) -> float:
  """PSNR in dB with peak 1 from a mean squared error; 0 error gives inf."""
  return float("inf") if mse_value == 0 else float(-10.0 * np.log10(mse_value))


def colorfulness_numpy(rgb_HW3) -> float:
  """`colorfulness` of one image in numpy."""
  rgb = np.asarray(rgb_HW3, np.float32) * 255.0
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  rg = r - g
  yb = 0.5 * (r + g) - b
  spread = np.sqrt(np.var(rg, dtype=np.float64) + np.var(yb, dtype=np.float64))
  offset = np.sqrt(np.mean(rg, dtype=np.float64) ** 2 + np.mean(yb, dtype=np.float64) ** 2)
  return float(spread + 0.3 * offset)


# ----------------------------------------------------------------------------------------------
# All per-image metrics
# ----------------------------------------------------------------------------------------------


def image_metrics(pred_rgb, true_rgb, pred_ab, true_ab, prior=None) -> dict[str, jax.Array]:
  """Every per-image metric of a batch, as `{name: (B,)}`; for the evaluator.

  Args:
    pred_rgb, true_rgb: `(B, H, W, 3)` RGB in [0, 1] (or uint8).
    pred_ab, true_ab: `(B, H, W, 2)` ab in Lab units, at the same resolution as the RGB.
    prior: `(313,)` bin prior for `auc_rebalanced`. Pass the evaluation set's own prior
      (`empirical_prior` accumulated over the whole set by the caller), so that the per-image
      values can be compared across batches. If None, the prior of this batch's ground truth is
      used, which only matches the set's prior when the batch is the whole set.

  Keys: psnr, ssim, mse, auc, auc_rebalanced, colorfulness (of the prediction),
  top1_bin_accuracy (nearest bin of `pred_ab` vs of `true_ab`).
  """
  if prior is None:
    prior = empirical_prior(true_ab)
  return {
      "psnr": psnr(pred_rgb, true_rgb),
      "ssim": ssim(pred_rgb, true_rgb),
      "mse": mse(pred_rgb, true_rgb),
      "auc": auc(pred_ab, true_ab),
      "auc_rebalanced": auc(pred_ab, true_ab, rebalanced_pixel_weights(true_ab, prior)),
      "colorfulness": colorfulness(pred_rgb),
      "top1_bin_accuracy": top1_bin_accuracy(pred_ab, true_ab),
  }


# ----------------------------------------------------------------------------------------------
# FID math (numpy float64, host side)
# ----------------------------------------------------------------------------------------------


def feature_statistics(features_ND) -> tuple[np.ndarray, np.ndarray]:
  """Mean `(D,)` and covariance `(D, D)` (unbiased, N - 1) of N feature vectors, float64."""
  features = np.asarray(features_ND, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError("features: expected shape (N, D) with N >= 2 feature vectors, "
                     f"got {features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix."""
  eigvals, eigvecs = np.linalg.eigh(matrix)
  return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
  """Frechet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), as used by FID.

  d = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)), in float64.
  Tr sqrtm(sigma1 sigma2) is computed as the sum of the square roots of the eigenvalues of the
  symmetric PSD matrix sqrt(sigma1) sigma2 sqrt(sigma1), which has the same eigenvalues as
  sigma1 sigma2. That needs no complex arithmetic and no eps offset, and stays finite when the
  covariances are singular (fewer samples than feature dimensions); round-off negative
  eigenvalues are clipped to 0.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  dim = mu1.shape[0]
  if mu1.shape != (dim,) or mu2.shape != (dim,):
    raise ValueError(f"frechet_distance: means must both be ({dim},), got {mu1.shape}, {mu2.shape}")
  if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
    raise ValueError(f"frechet_distance: covariances must be ({dim}, {dim}), got "
                     f"{sigma1.shape}, {sigma2.shape}")
  sqrt_sigma1 = _psd_sqrt(0.5 * (sigma1 + sigma1.T))
  product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
  eigvals = np.linalg.eigvalsh(0.5 * (product + product.T))
  trace_sqrt_product = np.sum(np.sqrt(np.clip(eigvals, 0.0, None)))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product)


# ----------------------------------------------------------------------------------------------
# Image grids (numpy, host side)
# ----------------------------------------------------------------------------------------------


def _to_uint8_rgb(image, where: str) -> np.ndarray:
  """HxWx3 uint8 from uint8 or float-in-[0, 1] images; HxW and HxWx1 gray are repeated to 3."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"image_grid: {where} must be HxW, HxWx1 or HxWx3, got {image.shape}")
  if image.dtype == np.uint8:
    return image
  return np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def image_grid(rows: Sequence[Sequence], separator_px: int = 2,
               separator_value: int = 255) -> np.ndarray:
  """One uint8 image with a row (gray | model | truth) per example, for reports and TensorBoard.

  Args:
    rows: a list of (gray, model, truth) triples of uint8 or float-in-[0, 1] images, each HxWx3
      (HxW or HxWx1 gray is repeated to 3 channels). The three images of a row share one size;
      rows may differ in size. Nothing is resized.
    separator_px: width of the lines between images and rows.
    separator_value: their gray level (255 = white), also used to pad rows narrower than the
      widest one.

  Returns:
    `(sum of row heights + (R - 1) * separator_px, max row width, 3)` uint8, where a row of
    HxW images is `3 * W + 2 * separator_px` wide.
  """
  if len(rows) == 0:
    raise ValueError("image_grid: rows is empty")
  row_images = []
  for r, row in enumerate(rows):
    if len(row) != 3:
      raise ValueError(f"image_grid: row {r} must be (gray, model, truth), got {len(row)} images")
    images = [_to_uint8_rgb(image, f"row {r} image {i}") for i, image in enumerate(row)]
    if len({image.shape for image in images}) != 1:
      raise ValueError(f"image_grid: row {r} images differ in size: "
                       f"{[image.shape for image in images]}")
    height = images[0].shape[0]
    line = np.full((height, separator_px, 3), separator_value, np.uint8)
    row_images.append(np.concatenate([images[0], line, images[1], line, images[2]], axis=1))
  width = max(row.shape[1] for row in row_images)
  height = sum(row.shape[0] for row in row_images) + (len(row_images) - 1) * separator_px
  grid = np.full((height, width, 3), separator_value, np.uint8)
  top = 0
  for row in row_images:
    grid[top:top + row.shape[0], :row.shape[1]] = row
    top += row.shape[0] + separator_px
  return grid
