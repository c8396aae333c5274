"""The metrics of `colorjax eval`, computed with scikit-image: the yardstick for its speed.

  colorjax colorize PHOTOS --checkpoint W --output COLORIZED
  python -m benchmarks.eval_vs_skimage PHOTOS COLORIZED

For every photo in PHOTOS and its colorized PNG in COLORIZED (`colorjax colorize` output: same
relative path, suffix .png), computes with scikit-image the per-image PSNR, SSIM (Gaussian window,
sigma 1.5, population covariance, as dm-pix), MSE, and with numpy the ab AuC, the class-rebalanced
AuC (the set's own prior; nearest bins from a k-d tree, scipy), the top-1 bin accuracy and the
colorfulness of Hasler & Suesstrunk (also of the photo), for the colorized photo and for the gray
baseline (the photo's L with ab = 0, through skimage's lab2rgb). `colorjax eval` of the folder should take no longer than the colorize run plus
this script. Prints the means, the seconds and images/s.

The values differ slightly from `colorjax eval`'s: the colorized photo here is the 8-bit PNG, there
the float result before rounding.
"""
from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
from PIL import Image
import scipy.spatial
from skimage import color as skcolor
from skimage import metrics as skmetrics

from colorjax import color, images

_THRESHOLDS = np.arange(151)


def colorfulness(rgb_HW3: np.ndarray) -> float:
  rgb = rgb_HW3.astype(np.float64) * 255.0
  rg = rgb[..., 0] - rgb[..., 1]
  yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
  return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def measure(true_rgb: np.ndarray, pred_rgb: np.ndarray, true_ab: np.ndarray, pred_ab: np.ndarray,
            true_bins: np.ndarray, tree) -> tuple[dict[str, float], np.ndarray]:
  """Per-image metrics and the (313, 151) counts of pixels within each threshold, per true bin."""
  mse = skmetrics.mean_squared_error(true_rgb, pred_rgb)
  error = np.linalg.norm(pred_ab - true_ab, axis=-1).ravel()
  first_t = np.searchsorted(_THRESHOLDS, error, side="left")
  hist = np.zeros((color.Q, len(_THRESHOLDS) + 1))
  np.add.at(hist, (true_bins, first_t), 1)
  within = np.cumsum(hist[:, :-1], axis=1)
  return {
      "psnr": skmetrics.peak_signal_noise_ratio(true_rgb, pred_rgb, data_range=1.0),
      "ssim": skmetrics.structural_similarity(true_rgb, pred_rgb, channel_axis=-1,
                                              data_range=1.0, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False),
      "mse": mse,
      "auc": within.sum(0).mean() / error.size,
      "colorfulness": colorfulness(pred_rgb),
      "top1_bin_accuracy": np.mean(tree.query(pred_ab.reshape(-1, 2))[1] == true_bins),
  }, within


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("photos")
  parser.add_argument("colorized")
  args = parser.parse_args()
  start = time.perf_counter()
  tree = scipy.spatial.cKDTree(color.AB_BINS.astype(np.float64))
  rows = {"model": [], "gray": []}
  within = {"model": 0, "gray": 0}
  bin_counts = np.zeros(color.Q)
  truth_colorfulness = []
  files = images.list_images([args.photos])
  for path, rel in files:
    true_rgb = np.asarray(Image.open(path).convert("RGB"), np.float64) / 255.0
    model_rgb = np.asarray(Image.open(pathlib.Path(args.colorized) / rel.with_suffix(".png")),
                           np.float64) / 255.0
    true_lab = skcolor.rgb2lab(true_rgb)
    gray_lab = true_lab.copy()
    gray_lab[..., 1:] = 0.0
    gray_rgb = skcolor.lab2rgb(gray_lab)
    true_ab = true_lab[..., 1:]
    truth_colorfulness.append(colorfulness(true_rgb))
    true_bins = tree.query(true_ab.reshape(-1, 2))[1]
    bin_counts += np.bincount(true_bins, minlength=color.Q)
    for name, rgb, ab in (("model", model_rgb, skcolor.rgb2lab(model_rgb)[..., 1:]),
                          ("gray", gray_rgb, np.zeros_like(true_ab))):
      row, counts = measure(true_rgb, rgb, true_ab, ab, true_bins, tree)
      rows[name].append(row)
      within[name] = within[name] + counts
  prior = bin_counts / bin_counts.sum()
  weights = np.where(prior > 0, 1.0 / np.where(prior > 0, prior, 1.0), 0.0)
  seconds = time.perf_counter() - start
  for name in ("model", "gray"):
    means = {k: np.mean([r[k] for r in rows[name]]) for k in rows[name][0]}
    pooled = within[name].sum(0).mean() / bin_counts.sum()
    rebalanced = (weights @ within[name]).mean() / (weights @ bin_counts)
    print(f"{name:>5}: PSNR {means['psnr']:.2f}  SSIM {means['ssim']:.4f}  AuC {pooled:.4f}  "
          f"AuC(rebal) {rebalanced:.4f}  colorfulness {means['colorfulness']:.1f}  "
          f"top-1 bin {means['top1_bin_accuracy']:.4f}")
  print(f"truth: colorfulness {np.mean(truth_colorfulness):.1f}")
  print(f"{len(files)} images in {seconds:.1f} s ({len(files) / seconds:.2f} images/s)")


if __name__ == "__main__":
  main()
