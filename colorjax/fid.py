"""Frechet Inception Distance (FID): pool3 features, their statistics, the distance of two sets.

Features are the 2048-d pool3 outputs of `models.inception.InceptionV3` (pytorch-fid's "FID
Inception", weights from a file the user supplies); this module owns the metric, that one the
network.

Preprocessing is pytorch-fid's: sRGB in [0, 1] (uint8 / 255), bilinear resize to 299x299 with
half-pixel centres (`align_corners=False`) and no antialiasing, then 2x - 1 to [-1, 1].

Calling convention::

  variables = inception.load_inception("pt_inception-2015-12-05-6726825d.pth")
  score = fid(real_images, fake_images, variables)        # iterables of HxWx3 images
  # or, fed as an evaluation goes:
  acc = FidAccumulator(variables, names=("model", "gray"))
  acc.add(truth_HW3, model=colorized_HW3, gray=gray_HW3)
  acc.result()                                             # {'model': fid, 'gray': fid}

The colorjax FID protocol (what `colorjax eval --fid-weights` reports): the distance between the
feature distribution of the colorized results and that of THEIR OWN ground truths (paired sets of
equal size), each image taken at the resolution it was evaluated at (the full-resolution output,
or the 256x256 center crop under the 'center' protocol) and resized to 299x299 as above. The gray
baseline (the L channel with ab = 0) gets the same treatment.

This is not the ColTran FID-5K protocol (Kumar et al., "Colorization Transformer", 2021), which
uses the first 5000 ImageNet validation images at 256x256, nor the full 50K-image ImageNet val
protocol of other papers. FID is biased by the sample size (it falls as N grows, markedly below a
few thousand images, and it is undefined in spirit for N < 2048 where the covariances are
singular), and it changes with the resize filter, the crop, the JPEG/PNG round trip and the
Inception port. So an FID is comparable only with one computed on the same images, the same N,
at the same resolution with the same network; a colorjax number on a folder of 100 photos must
not be set beside a published FID-5K.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import jax
import numpy as np

from colorjax import metrics
from colorjax.models import inception


# ----------------------------------------------------------------------------------------------
# Preprocessing and features
# ----------------------------------------------------------------------------------------------


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices (i0, i1) and weights of i1 for a half-pixel-centre bilinear resize."""
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
  src = np.maximum(src, 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  return i0, i1, src - i0


def preprocess(image_HW3, size: int = inception.INPUT_SIZE) -> np.ndarray:
  """One image -> the network's input `(size, size, 3)` float32 in [-1, 1] (pytorch-fid's).

  `image_HW3` is uint8 RGB or float RGB in [0, 1], any size. Bilinear resize with half-pixel
  centres (torch's `interpolate(mode='bilinear', align_corners=False)`, no antialiasing).
  """
  image = np.asarray(image_HW3)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"FID: expected an RGB image of shape (H, W, 3), got {image.shape}")
  # float64 throughout: torch's float32 kernel places its samples up to ~1e-4 px off (float32
  # index arithmetic at indices ~300), which moves values by up to ~1e-4; this is the exact filter.
  x = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
  r0, r1, wr = _bilinear_taps(x.shape[0], size)
  c0, c1, wc = _bilinear_taps(x.shape[1], size)
  rows = x[r0] * (1.0 - wr)[:, None, None] + x[r1] * wr[:, None, None]
  out = rows[:, c0] * (1.0 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]
  return (2.0 * out - 1.0).astype(np.float32)


@jax.jit
def _features_step(variables, x_BHW3):
  return inception.InceptionV3().apply(variables, x_BHW3)


def _features_of_batch(variables, batch: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
  """Features of up to `batch_size` preprocessed images; pads so one compiled shape serves all."""
  x = np.stack(batch)
  if x.shape[0] < batch_size:
    x = np.concatenate([x, np.zeros((batch_size - x.shape[0],) + x.shape[1:], x.dtype)])
  return np.asarray(_features_step(variables, x))[:len(batch)]


def pool3_features(variables, images_uint8_BHW3: Iterable, batch_size: int = 32) -> np.ndarray:
  """`(N, 2048)` float32 pool3 features of N images (an array `(N, H, W, 3)` or an iterable of
  HxWx3 images of any sizes; uint8 or float in [0, 1]), preprocessed as pytorch-fid does.

  Images are resized on the host, then run `batch_size` at a time on the default device; the
  last batch is zero-padded so that one compiled shape serves every call.
  """
  out, batch = [], []
  for image in images_uint8_BHW3:
    batch.append(preprocess(image))
    if len(batch) == batch_size:
      out.append(_features_of_batch(variables, batch, batch_size))
      batch = []
  if batch:
    out.append(_features_of_batch(variables, batch, batch_size))
  if not out:
    return np.zeros((0, inception.FEATURE_DIM), np.float32)
  return np.concatenate(out)


def _low_rank_frechet_distance(x_ND: np.ndarray, y_MD: np.ndarray) -> float:
  """`metrics.frechet_distance` of the two sets' Gaussians, exact, for N, M < D.

  With centred, scaled features A = (x - mu_x) / sqrt(N - 1) (so sigma_x = A^T A) and B likewise,
  the eigenvalues of sigma_x sigma_y are those of (A B^T)(A B^T)^T: Tr sqrtm(sigma_x sigma_y) is
  the sum of the singular values of the N x M matrix A B^T. That costs O(D N M) instead of
  several D x D eigendecompositions (D = 2048), and needs no square root of near-zero
  eigenvalues, which is where the D x D route loses its last digits on small sets.
  """
  a = (x_ND - x_ND.mean(0)) / np.sqrt(x_ND.shape[0] - 1)
  b = (y_MD - y_MD.mean(0)) / np.sqrt(y_MD.shape[0] - 1)
  diff = x_ND.mean(0) - y_MD.mean(0)
  trace_sqrt_product = np.linalg.svd(a @ b.T, compute_uv=False).sum()
  return float(diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * trace_sqrt_product)


def fid_from_features(real_ND, fake_MD) -> float:
  """FID between two sets of pool3 features (N, M >= 2).

  The Frechet distance of `metrics.feature_statistics` of both sets (`metrics.frechet_distance`);
  sets smaller than the feature dimension take an exact low-rank route to the same number.
  """
  real = np.asarray(real_ND, np.float64)
  fake = np.asarray(fake_MD, np.float64)
  for name, feats in (("real", real), ("fake", fake)):
    if feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] != real.shape[1]:
      raise ValueError(f"FID: the {name} features must be (N >= 2, {real.shape[-1]}), "
                       f"got {feats.shape}")
  if max(real.shape[0], fake.shape[0]) < real.shape[1]:
    return _low_rank_frechet_distance(real, fake)
  mu1, sigma1 = metrics.feature_statistics(real)
  mu2, sigma2 = metrics.feature_statistics(fake)
  return metrics.frechet_distance(mu1, sigma1, mu2, sigma2)


def fid(real_images_iter: Iterable, fake_images_iter: Iterable, variables,
        batch_size: int = 32) -> float:
  """FID between two image sets (iterables of HxWx3 uint8 / [0, 1] float images)."""
  features = {}
  for name, images in (("real", real_images_iter), ("fake", fake_images_iter)):
    features[name] = pool3_features(variables, images, batch_size)
    if features[name].shape[0] < 2:
      raise ValueError(f"FID needs at least 2 images per set; the {name} set has "
                       f"{features[name].shape[0]}")
  return fid_from_features(features["real"], features["fake"])


class FidAccumulator:
  """FID of one or more generated sets against the real set, fed image by image.

  Each `add` takes one real image and its generated counterparts (paired sets, the colorjax
  protocol); images are preprocessed at once and run through the network `batch_size` at a
  time, so memory stays bounded whatever the number of images.

    acc = FidAccumulator(variables, names=("model", "gray"))
    for truth, model_rgb, gray_rgb in ...:
      acc.add(truth, model=model_rgb, gray=gray_rgb)
    acc.result()   # {'model': 12.3, 'gray': 45.6}
  """

  def __init__(self, variables, names: Sequence[str] = ("model",), batch_size: int = 32):
    if not names or len(set(names)) != len(names) or "real" in names:
      raise ValueError(f"FidAccumulator: names must be distinct and not 'real', got {names!r}")
    self.variables = variables
    self.names = tuple(names)
    self.batch_size = batch_size
    self._pending: list[tuple[str, np.ndarray]] = []
    self._features: dict[str, list[np.ndarray]] = {n: [] for n in ("real",) + self.names}

  def add(self, real_HW3, **fakes_HW3) -> None:
    """Adds one real image and one image of each generated set (keyword = set name)."""
    if set(fakes_HW3) != set(self.names):
      raise ValueError(f"FidAccumulator.add: expected images for {sorted(self.names)}, "
                       f"got {sorted(fakes_HW3)}")
    self._pending.append(("real", preprocess(real_HW3)))
    self._pending.extend((n, preprocess(fakes_HW3[n])) for n in self.names)
    while len(self._pending) >= self.batch_size:
      self._flush(self._pending[:self.batch_size])
      self._pending = self._pending[self.batch_size:]

  def _flush(self, items: list[tuple[str, np.ndarray]]) -> None:
    feats = _features_of_batch(self.variables, [x for _, x in items], self.batch_size)
    for (name, _), f in zip(items, feats):
      self._features[name].append(f)

  def features(self) -> dict[str, np.ndarray]:
    """{'real': (N, 2048), name: (N, 2048), ...} of everything added so far."""
    if self._pending:
      self._flush(self._pending)
      self._pending = []
    return {n: np.stack(f) if f else np.zeros((0, inception.FEATURE_DIM), np.float32)
            for n, f in self._features.items()}

  def result(self) -> dict[str, float]:
    """{name: FID of that set against the real set}; needs at least 2 images."""
    feats = self.features()
    if feats["real"].shape[0] < 2:
      raise ValueError(f"FID needs at least 2 images, {feats['real'].shape[0]} were added")
    return {n: fid_from_features(feats["real"], feats[n]) for n in self.names}
