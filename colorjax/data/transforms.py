"""Per-image transforms: decode, near-gray check, resize, random crop, augment; the eval crop.

They run inside grain (`map` / `random_map`) and return a `skips.Skipped` marker for a record
that is unreadable or near-gray."""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageFilter

from colorjax import images
from colorjax.data import skips

_log = logging.getLogger(__name__)

CUTOUT_FILL = 128  # cutout squares are mid-gray (a = b = 0): no color to learn, no fake black


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training augmentations; flips follow the ECCV16 recipe, the rest seed 001's.

  flip: horizontal flip with probability 1/2.
  vflip: vertical flip with probability 1/2.
  rotate_degrees: rotation by an angle uniform in [-d, d]; the crop is taken from a larger patch so
    that no corner of the rotated image is empty.
  blur_sigma: with probability 1/2, a Gaussian blur with sigma uniform in (0, blur_sigma] pixels.
  cutout: side in pixels of a mid-gray square at a uniform random centre (clipped at the borders,
    as in DeVries & Taylor 2017); 0 = off.
  """
  flip: bool = True
  vflip: bool = False
  rotate_degrees: float = 0.0
  blur_sigma: float = 0.0
  cutout: int = 0

  @classmethod
  def from_mapping(cls, mapping: Mapping[str, Any] | Augment | None) -> Augment:
    """An Augment from a dict or ConfigDict; keys that are not fields are ignored, so a whole
    `config.data` can be passed."""
    if mapping is None:
      return cls()
    if isinstance(mapping, Augment):
      return mapping
    casts = {"flip": bool, "vflip": bool, "rotate_degrees": float, "blur_sigma": float,
             "cutout": int}
    values = {}
    for key, cast in casts.items():
      value = mapping.get(key, None)
      if value is not None:
        try:
          values[key] = cast(value)
        except (TypeError, ValueError) as e:
          raise ValueError(f"augment.{key} must be a {cast.__name__}, got {value!r}") from e
    augment = cls(**values)
    augment.validate()
    return augment

  def validate(self, crop_size: int | None = None) -> None:
    if not 0.0 <= float(self.rotate_degrees) <= 180.0:
      raise ValueError(f"augment.rotate_degrees must be in [0, 180], got {self.rotate_degrees}")
    if float(self.blur_sigma) < 0.0:
      raise ValueError(f"augment.blur_sigma must be >= 0, got {self.blur_sigma}")
    if int(self.cutout) < 0 or int(self.cutout) != self.cutout:
      raise ValueError(f"augment.cutout must be an integer >= 0, got {self.cutout}")
    if crop_size is not None and self.cutout > crop_size:
      raise ValueError(f"augment.cutout ({self.cutout}) is larger than the crop ({crop_size})")



_warned_names: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(name: str, message: str) -> None:
  """Logs an unreadable file once per process (it comes back every epoch)."""
  with _warned_lock:
    if name in _warned_names:
      return
    _warned_names.add(name)
  _log.warning("skipping unreadable image: %s", message)


def _resize_short_side(img: Image.Image, short_side: int, resample: int,
                       reducing_gap: float | None = None) -> Image.Image:
  """Resizes so the shorter side is exactly `short_side`, keeping the aspect ratio.

  `reducing_gap` (Pillow) first shrinks large images by an integer factor: faster, and not exactly
  the plain antialiased resize.
  """
  width, height = img.size
  scale = short_side / min(width, height)
  size = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
  if size == img.size:
    return img
  return img.resize(size, resample, reducing_gap=reducing_gap if scale < 1.0 else None)


def _rotated_patch_side(crop_size: int, angle_degrees: float) -> int:
  """Side of the square patch whose rotation by the angle covers a centred crop_size square."""
  theta = math.radians(angle_degrees)
  return math.ceil(crop_size * (abs(math.cos(theta)) + abs(math.sin(theta)))) + 2


@dataclasses.dataclass(frozen=True)
class TrainExample:
  """Decode -> near-gray check -> resize -> random crop -> augmentations, for `random_map`.

  Called as `transform((data, name), rng)`; returns uint8 `(crop, crop, 3)` or a `skips.Skipped`
  marker. All randomness comes from `rng` (grain derives it from the seed and the element's index),
  so the result depends only on (seed, position in the stream).
  """
  crop_size: int
  resize_size: int
  min_chroma: float
  augment: Augment

  def __call__(self, record: tuple[bytes | None, str], rng: np.random.Generator):
    data, name = record
    aug = self.augment
    angle = 0.0
    if aug.rotate_degrees:
      angle = float(rng.uniform(-aug.rotate_degrees, aug.rotate_degrees))
    patch = _rotated_patch_side(self.crop_size, angle) if angle else self.crop_size
    short_side = max(self.resize_size, patch)
    try:
      rgb_HW3 = images.decode_rgb(data, name, min_side=short_side)
    except images.ImageReadError as e:
      _warn_once(name, str(e))
      return skips.Skipped(name, "unreadable")
    if self.min_chroma > 0 and images.chroma(rgb_HW3) < self.min_chroma:
      return skips.Skipped(name, "gray")

    img = _resize_short_side(Image.fromarray(rgb_HW3), short_side, Image.Resampling.BILINEAR,
                             reducing_gap=3.0)
    width, height = img.size
    left = int(rng.integers(0, width - patch + 1))
    top = int(rng.integers(0, height - patch + 1))
    img = img.crop((left, top, left + patch, top + patch))
    if angle:
      img = img.rotate(angle, resample=Image.Resampling.BILINEAR)
      margin = (patch - self.crop_size) // 2
      img = img.crop((margin, margin, margin + self.crop_size, margin + self.crop_size))
    if aug.blur_sigma and rng.random() < 0.5:
      sigma = float(aug.blur_sigma) * (1.0 - float(rng.random()))  # in (0, blur_sigma]
      img = img.filter(ImageFilter.GaussianBlur(radius=sigma))
    crop_HW3 = np.asarray(img, dtype=np.uint8)
    if aug.flip and rng.random() < 0.5:
      crop_HW3 = crop_HW3[:, ::-1]
    if aug.vflip and rng.random() < 0.5:
      crop_HW3 = crop_HW3[::-1, :]
    if aug.cutout:
      crop_HW3 = crop_HW3.copy()
      cy, cx = (int(v) for v in rng.integers(0, self.crop_size, size=2))
      half = aug.cutout // 2
      crop_HW3[max(0, cy - half):cy - half + aug.cutout,
               max(0, cx - half):cx - half + aug.cutout] = CUTOUT_FILL
    return np.ascontiguousarray(crop_HW3)


@dataclasses.dataclass(frozen=True)
class EvalExample:
  """Decode -> resize the short side to image_size -> center crop; `skips.Skipped` if unreadable."""
  image_size: int

  def __call__(self, record: tuple[bytes | None, str]):
    data, name = record
    try:
      rgb_HW3 = images.decode_rgb(data, name)
    except images.ImageReadError as e:
      _warn_once(name, str(e))
      return skips.Skipped(name, "unreadable")
    return center_crop_resize(rgb_HW3, self.image_size), name


def center_crop_resize(rgb_HW3: np.ndarray, image_size: int) -> np.ndarray:
  """The `S x S` evaluation protocol: resize the short side to S (antialiased bicubic), then crop
  the centre S x S."""
  img = _resize_short_side(Image.fromarray(rgb_HW3), image_size, Image.Resampling.BICUBIC)
  width, height = img.size
  left, top = (width - image_size) // 2, (height - image_size) // 2
  return np.asarray(img.crop((left, top, left + image_size, top + image_size)), dtype=np.uint8)
