"""Color science for colorization: sRGB <-> CIELAB, normalisations and the ECCV16 ab bins.

Every function works on numpy arrays (computed with numpy, for the host-side data pipeline and
image writing) and on jax arrays (computed with jax.numpy, jit-able, for the training step).
Arrays are batched over leading axes: `...HWC`.

The quantised-ab machinery follows Zhang, Isola & Efros, "Colorful Image Colorization",
ECCV 2016: 313 bins of size 10 in ab space, soft encoding of the ground truth onto the nearest
bins, class rebalancing from a smoothed prior, and the annealed-mean decode.
"""
from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Convention = Literal["eccv16", "pix2pix"]

# CIE D65 white point, 2-degree observer, and the sRGB primaries (IEC 61966-2-1), as in skimage.
# The white point is not exactly the matrix's row sums, so a gray pixel gets |ab| < 5e-3 rather
# than exactly 0; matching skimage (the reference of published numbers) is the choice here.
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZ_FROM_RGB = np.array([
    [0.412453, 0.357580, 0.180423],
    [0.212671, 0.715160, 0.072169],
    [0.019334, 0.119193, 0.950227],
])
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_LAB_EPSILON = 0.008856  # (6/29)^3 as rounded by the CIE
_LAB_KAPPA_SLOPE = 7.787  # (29/6)^2 / 3 as rounded by the CIE

AB_SCALE = 110.0  # ab / 110 in both normalisation conventions

# The ECCV16 gamut table: for each a (-90..100 step 10), the inclusive b range (step 10).
# Its order is the order of the official model's 313 logits.
_ECCV16_B_RANGES = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100),
    -40: (-40, 100), -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100),
    10: (-80, 90), 20: (-80, 90), 30: (-90, 90), 40: (-100, 90), 50: (-100, 80),
    60: (-110, 80), 70: (-110, 80), 80: (-110, 70), 90: (-110, 70), 100: (-90, 0),
}


def _make_ab_bins() -> np.ndarray:
  centres = [(a, b) for a, (lo, hi) in _ECCV16_B_RANGES.items() for b in range(lo, hi + 1, 10)]
  return np.asarray(centres, dtype=np.float32)


AB_BINS: np.ndarray = _make_ab_bins()
"""(313, 2) float32: the ab centres of the ECCV16 bins, in Lab units, in the official order."""
Q = AB_BINS.shape[0]
assert Q == 313


def _xp(x):
  """numpy for host arrays and Python scalars, jax.numpy for jax arrays and tracers."""
  return jnp if isinstance(x, jax.Array) else np


def _as_float_rgb(rgb):
  xp = _xp(rgb)
  if rgb.dtype == np.uint8:
    return rgb.astype(xp.float32) / 255.0
  return rgb.astype(xp.float32)


# ----------------------------------------------------------------------------------------------
# sRGB <-> Lab
# ----------------------------------------------------------------------------------------------


def _srgb_to_linear(rgb):
  return _xp(rgb).where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


# Linear RGB of each 8-bit sRGB level, by the formula above: a look-up gives the same float32
# values as computing it per pixel.
_LINEAR_OF_UINT8 = _srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0).astype(np.float32)


def _linear_rgb(rgb):
  if _xp(rgb) is np and rgb.dtype == np.uint8:
    return _LINEAR_OF_UINT8[rgb]
  return _srgb_to_linear(_as_float_rgb(rgb))


def rgb_to_lab(rgb):
  """sRGB (`...3`, float in [0, 1] or uint8) -> CIELAB float32 (L in [0, 100]), D65."""
  xp = _xp(rgb)
  linear = _linear_rgb(rgb)
  xyz = linear @ xp.asarray((_XYZ_FROM_RGB.T / _D65_WHITE).astype(np.float32))
  f = xp.where(xyz > _LAB_EPSILON, xp.cbrt(xp.maximum(xyz, _LAB_EPSILON)),
               _LAB_KAPPA_SLOPE * xyz + 16.0 / 116.0)
  fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
  lab = xp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)
  return lab.astype(xp.float32)


def lightness(rgb):
  """`rgb_to_lab(rgb)[..., :1]` (the same float32 values), computing only what L needs; numpy.

  Only the Y row of XYZ goes through the cube root: a few times faster than the whole conversion.
  (Both look up the linear RGB of a uint8 image in a table.)
  """
  linear = _linear_rgb(np.asarray(rgb))
  y = np.ascontiguousarray((linear @ (_XYZ_FROM_RGB.T / _D65_WHITE).astype(np.float32))[..., 1:2])
  fy = np.where(y > _LAB_EPSILON, np.cbrt(np.maximum(y, _LAB_EPSILON)),
                _LAB_KAPPA_SLOPE * y + 16.0 / 116.0)
  return (116.0 * fy - 16.0).astype(np.float32)


def lab_to_rgb(lab):
  """CIELAB (`...3`, L in [0, 100]) -> sRGB float32 in [0, 1]; out-of-gamut colors are clipped."""
  xp = _xp(lab)
  lab = lab.astype(xp.float32)
  fy = (lab[..., 0] + 16.0) / 116.0
  fx = fy + lab[..., 1] / 500.0
  fz = xp.maximum(fy - lab[..., 2] / 200.0, 0.0)
  f = xp.stack([fx, fy, fz], axis=-1)
  xyz = xp.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / _LAB_KAPPA_SLOPE)
  linear = xyz @ xp.asarray((_RGB_FROM_XYZ.T * _D65_WHITE[:, None]).astype(np.float32))
  srgb = xp.where(linear > 0.0031308,
                  1.055 * xp.maximum(linear, 0.0031308) ** (1 / 2.4) - 0.055,
                  12.92 * linear)
  return xp.clip(srgb, 0.0, 1.0).astype(xp.float32)


def rgb_to_uint8(rgb):
  """Float sRGB in [0, 1] -> uint8, rounding to nearest."""
  xp = _xp(rgb)
  return xp.clip(xp.round(rgb * 255.0), 0, 255).astype(xp.uint8)


# ----------------------------------------------------------------------------------------------
# Normalisations
# ----------------------------------------------------------------------------------------------


def normalize_l(l, convention: Convention = "eccv16"):
  """L in [0, 100] -> network input: 'eccv16' (L-50)/100 in [-0.5, 0.5]; 'pix2pix' L/50-1 in [-1, 1]."""
  if convention == "eccv16":
    return (l - 50.0) / 100.0
  if convention == "pix2pix":
    return l / 50.0 - 1.0
  raise ValueError(f"unknown normalisation convention {convention!r}: use 'eccv16' or 'pix2pix'")


def denormalize_l(l_norm, convention: Convention = "eccv16"):
  """Inverse of `normalize_l`."""
  if convention == "eccv16":
    return l_norm * 100.0 + 50.0
  if convention == "pix2pix":
    return (l_norm + 1.0) * 50.0
  raise ValueError(f"unknown normalisation convention {convention!r}: use 'eccv16' or 'pix2pix'")


def normalize_ab(ab):
  """ab in Lab units -> ab / 110 (both conventions), roughly in [-1, 1]."""
  return ab / AB_SCALE


def denormalize_ab(ab_norm):
  """Inverse of `normalize_ab`."""
  return ab_norm * AB_SCALE


# ----------------------------------------------------------------------------------------------
# Quantised ab: bins, soft encoding, prior, rebalancing, decoding
# ----------------------------------------------------------------------------------------------


def _squared_distances_to_bins(ab):
  xp = _xp(ab)
  bins = xp.asarray(AB_BINS)
  ab = ab.astype(xp.float32)
  # |x - c|^2 expanded, which is one matmul instead of a (..., 313, 2) intermediate.
  d2 = (xp.sum(ab * ab, axis=-1, keepdims=True) - 2.0 * ab @ bins.T
        + xp.sum(bins * bins, axis=-1))
  return xp.maximum(d2, 0.0)


def nearest_bin(ab):
  """Index (int32, `...`) of the ECCV16 bin nearest to each ab value (`...2`, Lab units)."""
  xp = _xp(ab)
  return xp.argmin(_squared_distances_to_bins(ab), axis=-1).astype(xp.int32)


def _make_grid_to_bin() -> np.ndarray:
  table = np.full((len(_ECCV16_B_RANGES) + 2, 24), -1, np.int32)
  for i, (a, b) in enumerate(AB_BINS.astype(np.int64)):
    table[a // 10 + 10, b // 10 + 12] = i
  return table


# Bin index of each point of the 10-unit ab grid (a = -100..110 on axis 0, b = -120..110 on axis
# 1), -1 where the grid point is not a bin; a border of -1 around the gamut.
_GRID_TO_BIN = _make_grid_to_bin()


def nearest_bin_numpy(ab) -> np.ndarray:
  """`nearest_bin` for host numpy arrays, exactly (float64 distances) and without a 313-way search.

  The bin centres lie on a 10-unit grid, so the grid point nearest to an ab value (each coordinate
  rounded) is its nearest bin whenever that point is a bin; a tie goes to the lower coordinate,
  which is the first of the tied bins in the official order, as `argmin` picks. The values whose
  rounded point is outside the gamut (few, at its border) are searched over all 313 bins.
  """
  ab = np.asarray(ab)
  shape = ab.shape[:-1]
  ab = ab.reshape(-1, 2).astype(np.float64)
  # ceil(x - 0.5) rounds halves down; NaN and far-off values land on the -1 border.
  a = np.clip(np.nan_to_num(np.ceil(ab[:, 0] / 10.0 - 0.5), nan=-99), -10, 11).astype(np.int64)
  b = np.clip(np.nan_to_num(np.ceil(ab[:, 1] / 10.0 - 0.5), nan=-99), -12, 11).astype(np.int64)
  bins = _GRID_TO_BIN[a + 10, b + 12]
  outside = np.flatnonzero(bins < 0)
  for start in range(0, outside.size, 1 << 14):  # bounded (n, 313) temporaries
    chunk = outside[start:start + (1 << 14)]
    d2 = np.sum((ab[chunk, None, :] - AB_BINS.astype(np.float64)) ** 2, axis=-1)
    bins[chunk] = np.argmin(d2, axis=-1)
  return bins.reshape(shape)


def soft_encode(ab, k: int = 5, sigma: float = 5.0):
  """Soft encoding of ground-truth ab (`...2`) onto its `k` nearest bins -> `...313`, sums to 1.

  Weights are a Gaussian (std `sigma`, Lab units) of the distance to each of the k nearest bin
  centres. The paper uses k=5; the released training code used k=10.
  """
  xp = _xp(ab)
  d2 = _squared_distances_to_bins(ab)
  if xp is jnp:
    neg_d2, idx = jax.lax.top_k(-d2, k)
    d2_k = -neg_d2
  else:
    idx = np.argpartition(d2, k - 1, axis=-1)[..., :k]
    d2_k = np.take_along_axis(d2, idx, axis=-1)
  # Shift by the smallest distance before exponentiating so far-off values cannot underflow to 0/0.
  w = xp.exp(-(d2_k - d2_k.min(axis=-1, keepdims=True)) / (2.0 * sigma**2))
  w = w / w.sum(axis=-1, keepdims=True)
  if xp is jnp:
    return jnp.sum(jax.nn.one_hot(idx, Q, dtype=jnp.float32) * w[..., None], axis=-2)
  out = np.zeros(d2.shape, np.float32)
  np.put_along_axis(out, idx, w.astype(np.float32), axis=-1)
  return out


def bin_histogram(ab, weights=None):
  """Counts (float64, 313) of ab values (`...2`) per nearest bin; numpy, for prior estimation."""
  idx = np.asarray(nearest_bin(np.asarray(ab))).ravel()
  w = None if weights is None else np.asarray(weights, np.float64).ravel()
  return np.bincount(idx, weights=w, minlength=Q).astype(np.float64)


def smooth_prior(prob, sigma: float = 5.0):
  """Gaussian smoothing (std `sigma` in ab units) of a distribution over the 313 bins, renormalised.

  The empirical distribution is convolved with the Gaussian restricted to the bin centres, which is
  the paper's smoothing of the ab histogram (sigma=5) evaluated at the bins.
  """
  prob = np.asarray(prob, np.float64)
  if prob.shape != (Q,):
    raise ValueError(f"a prior must have shape ({Q},), got {prob.shape}")
  bins = AB_BINS.astype(np.float64)
  d2 = np.sum((bins[:, None, :] - bins[None, :, :]) ** 2, axis=-1)
  kernel = np.exp(-d2 / (2.0 * sigma**2))
  smoothed = kernel @ prob
  total = smoothed.sum()
  if not total > 0:
    raise ValueError("cannot smooth an empty prior (all counts are zero)")
  return (smoothed / total).astype(np.float32)


def rebalance_weights(prior, lam: float = 0.5):
  """Class-rebalancing weights w ∝ ((1-λ)p + λ/Q)^-1, normalised so that Σ p·w = 1 (313,)."""
  xp = _xp(prior)
  prior = prior.astype(xp.float32)
  w = 1.0 / ((1.0 - lam) * prior + lam / Q)
  return w / xp.sum(prior * w)


def decode_annealed_mean(logits, temperature: float = 0.38):
  """Annealed mean of the 313-way distribution (`...313` logits) -> ab (`...2`, Lab units).

  T=1 is the plain mean of softmax(logits); T->0 approaches the mode; the paper uses T=0.38.
  """
  xp = _xp(logits)
  z = logits.astype(xp.float32) / temperature
  z = z - z.max(axis=-1, keepdims=True)
  p = xp.exp(z)
  p = p / p.sum(axis=-1, keepdims=True)
  return p @ xp.asarray(AB_BINS)


def decode_mode(logits):
  """ab (`...2`, Lab units) of the most probable bin."""
  xp = _xp(logits)
  return xp.asarray(AB_BINS)[xp.argmax(logits, axis=-1)]


# ----------------------------------------------------------------------------------------------
# Rebuilding a full-resolution color image
# ----------------------------------------------------------------------------------------------


def resize_ab_bilinear(ab_hw2: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of an ab map (host numpy, half-pixel centres, no antialiasing).

  Matches `torch.nn.functional.interpolate(mode='bilinear', align_corners=False)` when upsampling,
  which is how the public release restores full resolution.
  """
  ab_hw2 = np.asarray(ab_hw2, np.float32)
  h, w = ab_hw2.shape[:2]

  def axis_weights(n_in, n_out):
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0.0, n_in - 1)
    lo = np.floor(x).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (x - lo).astype(np.float32)
    return lo, hi, frac

  y0, y1, fy = axis_weights(h, height)
  x0, x1, fx = axis_weights(w, width)
  rows = ab_hw2[y0] * (1 - fy)[:, None, None] + ab_hw2[y1] * fy[:, None, None]
  return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def colorize_with_ab(original_rgb: np.ndarray, ab_hw2: np.ndarray) -> np.ndarray:
  """Joins a predicted ab map (any resolution) to the ORIGINAL image's full-resolution L -> uint8 RGB."""
  height, width = original_rgb.shape[:2]
  l_full = rgb_to_lab(np.asarray(original_rgb))[..., :1]
  ab_full = resize_ab_bilinear(ab_hw2, height, width)
  return rgb_to_uint8(lab_to_rgb(np.concatenate([l_full, ab_full], axis=-1)))
