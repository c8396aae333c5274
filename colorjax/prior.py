"""The empirical ab prior of a dataset over the 313 ECCV16 bins (`colorjax prior`).

The prior p is the share of pixels whose ground-truth ab falls nearest to each bin, smoothed with
a Gaussian (sigma=5) as in Zhang et al. 2016; training turns it into class-rebalancing weights.
Images are downscaled (short side `image_size`) before counting: the ab histogram of a photo
barely changes with resolution and counting stays cheap.
"""
from __future__ import annotations

import logging
import pathlib

import numpy as np
from PIL import Image

from colorjax import color, data, images

logger = logging.getLogger("colorjax")
PRIOR_FILE = "prior.npy"


def compute_prior(source, *, image_size: int = 64, max_images: int | None = None,
                  sigma: float = 5.0, progress: bool = True) -> np.ndarray:
  """Smoothed prior (313,) float32 of an image source (see `data.image_source`) or its spec."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  source = data.image_source(source) if isinstance(source, (str, pathlib.Path)) else source
  n = len(source) if max_images is None else min(len(source), max_images)
  counts = np.zeros((color.Q,), np.float64)
  used = skipped = 0
  for i in tqdm(range(n), desc="prior", unit="img", disable=not progress):
    encoded, name = source[i]
    try:
      if encoded is None:
        raise images.ImageReadError(name, "the file could not be read")
      rgb = images.decode_rgb(encoded, name)
    except images.ImageReadError as e:
      logger.warning("prior: skipping %s", e)
      skipped += 1
      continue
    img = Image.fromarray(rgb)
    scale = image_size / min(img.size)
    if scale < 1:
      img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                       Image.BILINEAR)
    counts += color.bin_histogram(color.rgb_to_lab(np.asarray(img))[..., 1:])
    used += 1
  if used == 0:
    raise ValueError(f"no readable image to compute a prior from ({skipped} skipped)")
  logger.info("prior from %d images (%d skipped)", used, skipped)
  return color.smooth_prior(counts / counts.sum(), sigma)


def load_prior(path: str | pathlib.Path) -> np.ndarray:
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"prior file {path} does not exist (config key loss.prior_file)")
  prior = np.load(path)
  if prior.shape != (color.Q,) or not np.all(np.isfinite(prior)) or prior.min() < 0:
    raise ValueError(f"prior file {path} must hold {color.Q} finite non-negative values, "
                     f"got shape {prior.shape}")
  return (prior / prior.sum()).astype(np.float32)


def load_or_compute(prior_file: str, workdir: str | pathlib.Path, source, *,
                    image_size: int = 64) -> np.ndarray:
  """The given prior file; else `workdir/prior.npy` from an earlier start; else computes it there."""
  if prior_file:
    return load_prior(prior_file)
  cached = pathlib.Path(workdir) / PRIOR_FILE
  if cached.is_file():
    return load_prior(cached)
  prior = compute_prior(source, image_size=image_size, max_images=2000)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp.npy")
    np.save(tmp, prior)
    tmp.rename(cached)
  return prior
