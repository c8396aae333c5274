"""Finding image files and decoding them, robustly, to 8-bit sRGB.

Shared by training, evaluation and `colorjax colorize`, so every path treats odd files the same:

  files = list_images(["photos/", "extra.png"])  # [(absolute file, path relative to its root)]
  rgb_HW3 = load_rgb(files[0][0])                  # uint8, any Pillow mode converted
  if chroma(rgb_HW3) < 3.0: ...                    # near-gray image

Every decoding failure (missing, unreadable, truncated, empty or non-image file) raises
`ImageReadError`, a `ValueError` naming the file and the cause, so callers can skip the file and
go on.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

try:
  from PIL import ImageCms  # pylint: disable=g-import-not-at-top
except ImportError:  # a Pillow built without littlecms: embedded ICC profiles are ignored
  ImageCms = None

from colorjax import color

IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
"""Lower-case file suffixes treated as images (matched case-insensitively)."""

# Transparent pixels are composited over white: a scanned or exported graphic with an alpha channel
# is meant to be seen on a page, and white keeps it a plausible photo (black would darken edges).
ALPHA_BACKGROUND = 255

_CHROMA_MAX_SIDE = 64  # chroma() subsamples to about this many pixels per side

_log = logging.getLogger(__name__)


def display_name(name: str | os.PathLike) -> str:
  """A file name printable and writable as UTF-8: bytes of a non-UTF-8 name (which Python keeps
  as lone surrogates, PEP 383) are shown as `\\xNN` escapes, e.g. 'caf\\xe9.jpg'."""
  name = os.fspath(name)
  try:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
  except UnicodeEncodeError:  # a surrogate no file name decodes to
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


class ImageReadError(ValueError):
  """An image file that cannot be decoded; `name` is the file, `cause` says why."""

  def __init__(self, name: str, cause: str):
    super().__init__(f"cannot read image {display_name(name)}: {cause}")
    self.name = name
    self.cause = cause


# ------------------------------------------------------------------------------------------------
# Finding files
# ------------------------------------------------------------------------------------------------


def is_image_file(path: str | os.PathLike) -> bool:
  """Whether `path` has one of `IMAGE_SUFFIXES` (case-insensitive)."""
  return pathlib.Path(path).suffix.lower() in IMAGE_SUFFIXES


def _walk_images(root: pathlib.Path) -> list[pathlib.Path]:
  """Image files under `root`, following directory links once; hidden entries are skipped.

  Hidden files (`.name`, e.g. macOS `._photo.jpg` resource forks) are not images even when their
  suffix says so.
  """
  found = []
  visited = set()
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    real = os.path.realpath(dirpath)
    if real in visited:  # a link cycle
      dirnames[:] = []
      continue
    visited.add(real)
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    for filename in filenames:
      if not filename.startswith(".") and is_image_file(filename):
        found.append(pathlib.Path(dirpath) / filename)
  return found


def list_images(paths: Sequence[str | os.PathLike]) -> list[tuple[pathlib.Path, pathlib.Path]]:
  """Image files named by `paths` (files, or folders searched recursively).

  Returns `(absolute file, path relative to its input root)` pairs: for a folder the path below the
  folder, for a file its name, so outputs can mirror the input tree. Inputs keep their order; the
  files of a folder are sorted by relative path (deterministic on every machine). A file given
  explicitly is listed whatever its suffix; inside folders only `IMAGE_SUFFIXES` count.

  Raises:
    FileNotFoundError: an input path does not exist (the message names it).
  """
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  listed = []
  for path in paths:
    path = pathlib.Path(path).expanduser()
    if not path.exists():
      raise FileNotFoundError(f"no such file or folder: {path}")
    path = path.resolve()
    if path.is_dir():
      files = _walk_images(path)
      pairs = [(f.absolute(), f.relative_to(path)) for f in files]
      listed.extend(sorted(pairs, key=lambda pair: pair[1].as_posix()))
    else:
      listed.append((path, pathlib.Path(path.name)))
  return listed


# ------------------------------------------------------------------------------------------------
# Decoding
# ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _icc_transform_to_srgb(icc_profile: bytes, mode: str):
  """A cached transform from an embedded ICC profile to sRGB, or None where none is needed."""
  try:
    profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    description = ImageCms.getProfileDescription(profile).strip()
    if mode == "RGB" and description.lower().startswith("srgb"):
      return None
    return ImageCms.buildTransform(profile, ImageCms.createProfile("sRGB"), mode, "RGB")
  except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
    return None  # an unusable profile: the pixels are used as they are


def _apply_icc_profile(img: Image.Image) -> Image.Image:
  """Converts RGB/CMYK pixels with an embedded ICC profile (Adobe RGB, P3, print CMYK) to sRGB."""
  icc_profile = img.info.get("icc_profile")
  if ImageCms is None or not icc_profile or img.mode not in ("RGB", "CMYK"):
    return img
  transform = _icc_transform_to_srgb(bytes(icc_profile), img.mode)
  if transform is None:
    return img
  try:
    return ImageCms.applyTransform(img, transform)
  except (ImageCms.PyCMSError, OSError, ValueError):
    return img


def _composite_over_white(color_HWC: np.ndarray, alpha_HW: np.ndarray) -> np.ndarray:
  """uint8 color over a white background by its uint8 alpha, rounded to uint8."""
  alpha = alpha_HW.astype(np.float32)[..., None] / 255.0
  blended = color_HWC.astype(np.float32) * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray_HW: np.ndarray) -> np.ndarray:
  return np.repeat(gray_HW[..., None], 3, axis=-1)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
  """Any Pillow mode -> uint8 sRGB (H, W, 3). See `decode_rgb` for the rules."""
  mode = img.mode
  if mode == "RGB":
    return np.asarray(img, dtype=np.uint8)
  if mode == "L":
    return _gray_to_rgb(np.asarray(img, dtype=np.uint8))
  if mode == "1":
    return _gray_to_rgb(np.asarray(img.convert("L"), dtype=np.uint8))
  if mode in ("P", "PA"):
    has_alpha = mode == "PA" or "transparency" in img.info
    img = img.convert("RGBA" if has_alpha else "RGB")
    return pil_to_rgb(img)
  if mode in ("RGBA", "RGBa"):
    rgba = np.asarray(img.convert("RGBA"), dtype=np.uint8)
    return _composite_over_white(rgba[..., :3], rgba[..., 3])
  if mode in ("LA", "La"):
    la = np.asarray(img.convert("LA"), dtype=np.uint8)
    return _gray_to_rgb(_composite_over_white(la[..., :1], la[..., 1])[..., 0])
  if mode.startswith("I;16") or mode == "I":
    # 16-bit samples: 0..65535 maps to 0..255 (mode 'I' from 16-bit files is read the same way;
    # values outside 0..65535 are clipped).
    values = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
    return _gray_to_rgb(((values * 255 + 32767) // 65535).astype(np.uint8))
  if mode == "F":
    # Float images: [0, 1] when every value is <= 1, else taken as 0..255; clipped to that range.
    values = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0)
    scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
    return _gray_to_rgb(np.clip(np.round(values * scale), 0, 255).astype(np.uint8))
  # CMYK (Pillow: R = (255 - C)(255 - K) / 255), YCbCr, RGBX, LAB, HSV, ...
  return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_rgb(data: bytes, name: str, *, min_side: int | None = None) -> np.ndarray:
  """Decodes an encoded image (any Pillow format and mode) to uint8 sRGB `(H, W, 3)`.

  Conversions: gray ('1', 'L') is replicated to 3 channels; palette images are expanded (their
  transparency kept as alpha); alpha ('RGBA', 'LA', 'PA') is composited over white; 16-bit gray
  ('I;16*', 'I') is scaled by its full range 0..65535 (not clipped at 255); float ('F') is read as
  [0, 1] if no value exceeds 1, else as 0..255; CMYK uses Pillow's conversion; an embedded ICC
  profile (Adobe RGB, Display P3, print CMYK) is converted to sRGB. The EXIF orientation is applied,
  and multi-frame files (GIF, TIFF) give their first frame.

  Args:
    data: the file's bytes.
    name: the file name, used in error messages.
    min_side: if given, a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (fast DCT scaling) while
      both sides stay >= `min_side`; for callers that resize to that size anyway.

  Raises:
    ImageReadError: empty, truncated, corrupt or non-image data.
  """
  if data is None:
    raise ImageReadError(name, "the file could not be read")
  if not data:
    raise ImageReadError(name, "empty file (0 bytes)")
  try:
    img = Image.open(io.BytesIO(data))
    if min_side and img.format == "JPEG":
      img.draft(None, (min_side, min_side))
    img.load()  # decodes now, so truncated data fails here and not later
  except Image.DecompressionBombError as e:
    raise ImageReadError(name, f"image too large ({e})") from e
  except Image.UnidentifiedImageError as e:
    raise ImageReadError(name, "not an image file (unknown format)") from e
  except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError) as e:
    raise ImageReadError(name, f"corrupt or truncated image ({type(e).__name__}: {e})") from e
  try:
    ImageOps.exif_transpose(img, in_place=True)
  except Exception:  # pylint: disable=broad-except
    _log.debug("ignoring unreadable EXIF orientation of %s", name)
  try:
    rgb_HW3 = pil_to_rgb(_apply_icc_profile(img))
  except (OSError, ValueError, TypeError) as e:
    raise ImageReadError(name, f"unsupported image mode {img.mode!r} ({e})") from e
  if rgb_HW3.ndim != 3 or rgb_HW3.shape[-1] != 3 or 0 in rgb_HW3.shape:
    raise ImageReadError(name, f"decoded to an unusable shape {rgb_HW3.shape}")
  return np.ascontiguousarray(rgb_HW3)


def read_bytes(path: str | os.PathLike) -> bytes:
  """The bytes of a file; raises ImageReadError (naming it) if it cannot be read."""
  try:
    return pathlib.Path(path).read_bytes()
  except OSError as e:
    raise ImageReadError(str(path), f"{type(e).__name__}: {e.strerror or e}") from e


def load_rgb(path: str | os.PathLike, *, min_side: int | None = None) -> np.ndarray:
  """Reads and decodes an image file to uint8 sRGB `(H, W, 3)`; see `decode_rgb`."""
  return decode_rgb(read_bytes(path), str(path), min_side=min_side)


def chroma(rgb_HW3: np.ndarray) -> float:
  """Mean CIELAB chroma sqrt(a^2 + b^2) of a uint8 RGB image, on a subsampled copy.

  A gray image scores ~0, sepia ~5-15, ordinary color photos ~10-40. Used to drop near-gray
  training images, which teach a colorization model nothing.
  """
  height, width = rgb_HW3.shape[:2]
  step = max(1, max(height, width) // _CHROMA_MAX_SIDE)
  lab = color.rgb_to_lab(np.asarray(rgb_HW3[::step, ::step]))
  return float(np.mean(np.hypot(lab[..., 1], lab[..., 2])))
