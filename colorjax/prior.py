"""The empirical ab prior of a dataset over the 313 ECCV16 bins (`colorjax prior`).

The prior p is the share of pixels whose ground-truth ab falls nearest to each bin, smoothed with
a Gaussian (sigma=5) as in Zhang et al. 2016; training turns it into class-rebalancing weights.
Images are downscaled (short side `image_size`) before counting: the ab histogram of a photo
barely changes with resolution and counting stays cheap. With `max_images`, the images counted are
a seeded uniform sample of the whole source (not its first records: a folder sorted by class would
give the prior of its first classes).
"""
from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
from PIL import Image

from colorjax import color, data, images
from colorjax import workdir as workdir_lib

_log = logging.getLogger(__name__)
AUTO_PRIOR_IMAGES = 2000  # images sampled for the prior training computes itself


def sample_indices(num_records: int, max_images: int | None, seed: int) -> np.ndarray:
  """Every record, or `max_images` records drawn uniformly without replacement (sorted)."""
  if max_images is not None and max_images < 1:
    raise ValueError(f"max_images must be >= 1, got {max_images}")
  if max_images is None or max_images >= num_records:
    return np.arange(num_records)
  return np.sort(np.random.default_rng(seed).choice(num_records, max_images, replace=False))


def compute_prior(source, *, image_size: int = 64, max_images: int | None = None,
                  seed: int = 0, sigma: float = 5.0, progress: bool = True) -> np.ndarray:
  """Smoothed prior (313,) float32 of an image source (see `data.image_source`) or its spec,
  from all its images or a uniform sample of `max_images` of them (`sample_indices`)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  source = data.image_source(source) if isinstance(source, (str, pathlib.Path)) else source
  indices = sample_indices(len(source), max_images, seed)
  counts = np.zeros((color.Q,), np.float64)
  used = skipped = 0
  for i in tqdm(indices, desc="prior", unit="img", disable=not progress):
    encoded, name = source[i]
    try:
      if encoded is None:
        raise images.ImageReadError(name, "the file could not be read")
      rgb = images.decode_rgb(encoded, name)
    except images.ImageReadError as e:
      _log.warning("prior: skipping %s", e)
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
  _log.info("prior from %d images (%d skipped)", used, skipped)
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
                    image_size: int = 64, max_images: int = AUTO_PRIOR_IMAGES,
                    seed: int = 0) -> np.ndarray:
  """The given prior file; else `workdir/prior.npy` from an earlier start; else computes it there
  from a uniform sample of `max_images` images of `source` drawn with `seed`, and records the
  sample in `workdir/prior.json`."""
  if prior_file:
    return load_prior(prior_file)
  cached = pathlib.Path(workdir) / workdir_lib.PRIOR_FILE
  if cached.is_file():
    return load_prior(cached)
  source = data.image_source(source) if isinstance(source, (str, pathlib.Path)) else source
  prior = compute_prior(source, image_size=image_size, max_images=max_images, seed=seed)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    cached.parent.mkdir(parents=True, exist_ok=True)
    sample = {"records": len(source), "sampled": min(len(source), max_images), "seed": seed,
              "image_size": image_size}
    (cached.parent / workdir_lib.PRIOR_SAMPLE_FILE).write_text(json.dumps(sample, indent=2) + "\n")
    tmp = cached.with_suffix(".tmp.npy")
    np.save(tmp, prior)
    tmp.rename(cached)
  return prior
