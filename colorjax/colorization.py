"""Colorizing photos with a trained model: arrays and PIL images in a notebook, files and folders.

The pipeline is the one of the ECCV16 public release's demo, applied to any colorjax model:

  1. load the image as 8-bit sRGB (any mode: gray, palette, alpha, CMYK, 16-bit; see
     `colorjax.images.decode_rgb`);
  2. resize the RGB image to `size x size` (bicubic, Pillow) and take its L (CIELAB, [0, 100]);
  3. predict ab with a `colorjax.inference.Colorizer` (at the model's output resolution, 1/4 of
     `size` for ECCV16);
  4. upsample ab bilinearly to the ORIGINAL size and join it with the ORIGINAL full-resolution L,
     then convert Lab -> RGB (`colorjax.color.colorize_with_ab`, computed in strips).

So the output has the input's size and exactly its lightness; only the chroma comes from the model.
A model that predicts RGB (`model.output='rgb'`) skips step 4's join: its own RGB is upsampled
bilinearly to the original size and is the result.

In a notebook::

  colorizer = inference.Colorizer.from_checkpoint("runs/eccv16")
  rgb_HW3 = colorize(PIL.Image.open("old_photo.jpg"), colorizer)   # uint8, the input's size

For files and folders (what `colorjax colorize` runs)::

  report = colorize_paths(["photos/", "scan.tif"], "colorized/", colorizer)
  report.written, report.failed   # [Path], [(Path, message)]

Output names mirror the inputs: `output_dir/<path relative to its input folder>` with the suffix
`.png` (a file given by itself is relative to its own folder, so it lands in `output_dir`
directly). See `output_paths` for what happens when two inputs would get the same output name.
"""
from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import pathlib
import sys
import time
from typing import Any, Callable, Sequence, Union

import numpy as np
from PIL import Image
import tqdm
from tqdm.contrib import logging as tqdm_logging

from colorjax import color
from colorjax import images
from colorjax import inference

_log = logging.getLogger(__name__)

ImageLike = Union[Image.Image, str, os.PathLike, np.ndarray]
"""What `colorize` accepts: a PIL image, an image file path, or an HxW / HxWx1 / HxWx3 / HxWx4
uint8 or float ([0, 1]) array."""

OUTPUT_SUFFIX = ".png"

# The full-resolution Lab -> RGB join runs on strips of about this many pixels: their float
# temporaries stay in the CPU's cache (half again as fast as whole photos), and a 100-megapixel
# scan needs megabytes of them instead of ~10 GB.
_JOIN_STRIP_PIXELS = 1 << 16

# Decoding, resizing and PNG encoding run in these threads (Pillow and numpy release the GIL)
# while the model predicts the next batch.
_IO_THREADS = max(1, min(4, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------
# One image
# ------------------------------------------------------------------------------------------------


def to_rgb(image: ImageLike) -> np.ndarray:
  """A PIL image, an image file or an array -> sRGB `(H, W, 3)`, uint8 or float32 in [0, 1].

  uint8 arrays stay uint8 and float arrays become float32, so no precision is lost before the
  full-resolution L is taken. Gray (HxW, HxWx1) is replicated to 3 channels and an alpha channel
  (HxWx4) is composited over white, as `colorjax.images` does for files.

  Raises:
    ImageReadError: a file that cannot be read (names it).
    ValueError: an array of another shape or dtype, or a float array outside [0, 1].
    TypeError: anything else.
  """
  if isinstance(image, Image.Image):
    # Any Pillow mode, by the same rules as image files.
    return images.pil_to_rgb(image)
  if isinstance(image, (str, os.PathLike)):
    return images.load_rgb(image)
  if not isinstance(image, np.ndarray):
    raise TypeError(f"colorize takes a PIL image, an image path or a numpy array, got "
                    f"{type(image).__name__}")
  return _array_to_rgb(image)


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
  if array.ndim == 2:
    array = array[..., None]
  if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
    raise ValueError(f"an image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
  if array.dtype == np.uint8:
    scale = 255.0
  elif np.issubdtype(array.dtype, np.floating):
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)) or array.min() < 0.0 or array.max() > 1.0:
      raise ValueError(
          f"a float image array must hold values in [0, 1], got range "
          f"[{np.nanmin(array):g}, {np.nanmax(array):g}] (for 0..255 values pass uint8)")
    scale = 1.0
  else:
    raise ValueError(f"an image array must be uint8 or float in [0, 1], got dtype {array.dtype}")
  if array.shape[-1] == 4:
    alpha = array[..., 3:].astype(np.float32) / scale
    blended = array[..., :3].astype(np.float32) * alpha + scale * (1.0 - alpha)
    array = (np.clip(np.round(blended), 0, 255).astype(np.uint8) if scale == 255.0
             else blended.astype(np.float32))
  if array.shape[-1] == 1:
    array = np.repeat(array, 3, axis=-1)
  return np.ascontiguousarray(array)


def model_input_l(rgb_HW3: np.ndarray, size: int) -> np.ndarray:
  """The model's input for an image: the L (float32 `(size, size, 1)`, [0, 100]) of the RGB image
  resized to `size x size` with Pillow's bicubic filter (8-bit, as the release's demo does)."""
  rgb_u8 = rgb_HW3 if rgb_HW3.dtype == np.uint8 else color.rgb_to_uint8(rgb_HW3)
  resized = Image.fromarray(rgb_u8, "RGB").resize((size, size), Image.Resampling.BICUBIC)
  return color.lightness(np.asarray(resized))


def _input_size(colorizer: Any, size: int | None) -> int:
  size = getattr(colorizer, "size", None) if size is None else size
  if size is None:
    raise ValueError("give size=: the colorizer has no default input size (`.size`)")
  if int(size) != size or size < 1:
    raise ValueError(f"size must be a positive integer, got {size!r}")
  return int(size)


def predicts_rgb(colorizer: Any) -> bool:
  """Whether a colorizer's model predicts whole RGB images (`colorizer.output == 'rgb'`, then
  `colorizer.predict_rgb(l)` gives them) rather than ab to join with the image's own L."""
  return getattr(colorizer, "output", "ab") == "rgb"


def predict(colorizer: Any, l_BHW1: np.ndarray) -> np.ndarray:
  """The model's own prediction for a batch of L: ab `(B, h, w, 2)` in Lab units, or for a model
  that predicts RGB (`predicts_rgb`) its RGB `(B, h, w, 3)` in [0, 1]."""
  rgb = predicts_rgb(colorizer)
  out = np.asarray(colorizer.predict_rgb(l_BHW1) if rgb else colorizer(l_BHW1))
  channels, what = (3, "RGB") if rgb else (2, "ab")
  if out.ndim != 4 or out.shape[0] != l_BHW1.shape[0] or out.shape[-1] != channels:
    raise ValueError(f"the colorizer returned shape {out.shape} for L of shape "
                     f"{l_BHW1.shape}; expected {what} of shape ({l_BHW1.shape[0]}, h, w, "
                     f"{channels})")
  return out


def colorize(image: ImageLike, colorizer: Callable[[np.ndarray], np.ndarray],
             size: int | None = None) -> np.ndarray:
  """Colorizes one image -> uint8 sRGB `(H, W, 3)` of the input's size, with the input's L.

  Args:
    image: a PIL image (any mode), an image file path, or an array (see `to_rgb`). A color image
      is colorized from its lightness alone.
    colorizer: a `colorjax.inference.Colorizer` (or any callable L `(B, S, S, 1)` in [0, 100] ->
      ab `(B, h, w, 2)` in Lab units, with a `.size` attribute when `size` is not given).
    size: the model's input side (the image is resized to `size x size` for the prediction
      only); default `colorizer.size`.
  """
  size = _input_size(colorizer, size)
  rgb_HW3 = to_rgb(image)
  prediction = predict(colorizer, model_input_l(rgb_HW3, size)[None])[0]
  return full_resolution_result(rgb_HW3, prediction, predicts_rgb(colorizer))


def full_resolution_result(rgb_HW3: np.ndarray, prediction_hwC: np.ndarray,
                           is_rgb: bool) -> np.ndarray:
  """uint8 RGB of the image's size from a prediction (`predict`): ab joined with the image's L
  (`join_full_resolution`), or a predicted RGB upsampled bilinearly (the model's own picture,
  lightness included)."""
  if is_rgb:
    height, width = rgb_HW3.shape[:2]
    return color.rgb_to_uint8(color.resize_ab_bilinear(prediction_hwC, height, width))
  return join_full_resolution(rgb_HW3, prediction_hwC)


def join_full_resolution(rgb_HW3: np.ndarray, ab_hw2: np.ndarray,
                         strip_pixels: int = _JOIN_STRIP_PIXELS) -> np.ndarray:
  """`color.colorize_with_ab` (ab upsampled bilinearly to the image's size, joined to the
  image's own L -> uint8 RGB), computed on horizontal strips to bound memory; same values."""
  height, width = rgb_HW3.shape[:2]
  ab_HW2 = color.resize_ab_bilinear(ab_hw2, height, width)
  out_HW3 = np.empty((height, width, 3), np.uint8)
  rows = max(1, strip_pixels // width)
  for top in range(0, height, rows):
    strip = slice(top, top + rows)
    l_hW1 = color.lightness(rgb_HW3[strip])
    lab_hW3 = np.concatenate([l_hW1, ab_HW2[strip]], axis=-1)
    out_HW3[strip] = color.rgb_to_uint8(color.lab_to_rgb(lab_hW3))
  return out_HW3


# ------------------------------------------------------------------------------------------------
# Files and folders
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ColorizeReport:
  """What `colorize_paths` did: files written (in input order) and inputs skipped, with why."""
  written: list[pathlib.Path] = dataclasses.field(default_factory=list)
  failed: list[tuple[pathlib.Path, str]] = dataclasses.field(default_factory=list)
  seconds: float = 0.0

  @property
  def images_per_second(self) -> float:
    """Written images per second of wall time (decoding, prediction and writing included)."""
    return len(self.written) / self.seconds if self.seconds > 0 else 0.0


def _name_key(path: pathlib.Path) -> str:
  # Case-insensitive: `A.png` and `a.png` are one file on macOS and Windows.
  return path.as_posix().lower()


def output_paths(relative_paths: Sequence[pathlib.Path],
                 output_dir: str | os.PathLike) -> list[pathlib.Path]:
  """Output file of each input (relative path from `images.list_images`), never two alike.

  The output is `output_dir/<relative path>` with its suffix replaced by `.png`. Where several
  inputs would get the same output (`a.jpg` and `a.png` in one folder; two files with one name
  given from different folders; compared case-insensitively), each of them keeps its full
  name and gets `.png` appended: `a.jpg.png`, `a.png.png`. If that name is still taken, `.2`,
  `.3`, ... is inserted before `.png` in input order (`x.jpg.2.png`). A run therefore never
  overwrites one of its own outputs; files left by an earlier run in `output_dir` are replaced.
  """
  output_dir = pathlib.Path(output_dir)
  relative_paths = [pathlib.Path(rel) for rel in relative_paths]
  plain = [rel.with_suffix(OUTPUT_SUFFIX) for rel in relative_paths]
  counts = collections.Counter(_name_key(p) for p in plain)
  candidates = [
      out if counts[_name_key(out)] == 1 else rel.with_name(rel.name + OUTPUT_SUFFIX)
      for rel, out in zip(relative_paths, plain)]
  taken = set()
  chosen = []
  for candidate in candidates:
    name, n = candidate, 1
    while _name_key(name) in taken:
      n += 1
      name = candidate.with_name(f"{candidate.stem}.{n}{OUTPUT_SUFFIX}")
    taken.add(_name_key(name))
    chosen.append(output_dir / name)
  return chosen


@dataclasses.dataclass
class _Loaded:
  rgb_HW3: np.ndarray
  l_SS1: np.ndarray


def _load(path: pathlib.Path, size: int) -> _Loaded:
  rgb_HW3 = images.load_rgb(path)
  return _Loaded(rgb_HW3, model_input_l(rgb_HW3, size))


def save_png(rgb_HW3: np.ndarray, path: pathlib.Path) -> None:
  """Writes uint8 RGB as a PNG, atomically (an interrupted run leaves no partial file)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
  try:
    # zlib level 1: on photos 4-5x faster than Pillow's default (6), and no larger.
    Image.fromarray(rgb_HW3, "RGB").save(partial, format="PNG", compress_level=1)
    os.replace(partial, path)
  finally:
    partial.unlink(missing_ok=True)


def _finish(rgb_HW3: np.ndarray, prediction_hwC: np.ndarray, is_rgb: bool,
            path: pathlib.Path) -> None:
  save_png(full_resolution_result(rgb_HW3, prediction_hwC, is_rgb), path)


def _error_message(path: pathlib.Path, error: Exception, doing: str) -> str:
  if isinstance(error, images.ImageReadError):
    return str(error)
  return f"cannot {doing} {path}: {type(error).__name__}: {error}"


def colorize_paths(inputs: Sequence[str | os.PathLike] | str | os.PathLike,
                   output_dir: str | os.PathLike,
                   colorizer: Callable[[np.ndarray], np.ndarray],
                   *, size: int | None = None, batch_size: int = 8,
                   progress: bool = True) -> ColorizeReport:
  """Colorizes image files and folders (recursively) into PNGs of the inputs' sizes.

  Images are decoded lazily, a batch at a time (the next batch loads while the model predicts,
  finished images are written while the model predicts the one after), so memory stays bounded
  by about three batches of originals whatever the number of inputs. Every image is resized to
  `size x size` for the model, so one batch can mix any sizes; the last batch is padded so the
  model compiles once. A file that cannot be read or written is logged, listed in
  `report.failed` with its name and the cause, and skipped; the others are written.

  Args:
    inputs: image files and/or folders (see `images.list_images`).
    output_dir: where the PNGs go (created); names mirror the inputs, see `output_paths`.
    colorizer: a `colorjax.inference.Colorizer` (or a callable like it, see `colorize`).
    size: the model's input side; default `colorizer.size`.
    batch_size: images per model call.
    progress: show a progress bar (count, rate, ETA) on stderr.

  Raises:
    FileNotFoundError: an input path does not exist (nothing is written then).
  """
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  size = _input_size(colorizer, size)
  is_rgb = predicts_rgb(colorizer)
  start = time.perf_counter()
  files = images.list_images(inputs)
  outputs = output_paths([rel for _, rel in files], output_dir)
  report = ColorizeReport()
  if not files:
    _log.warning("no image files found in %s", ", ".join(map(str, _as_list(inputs))))
    return report
  model_batch = min(int(batch_size), len(files))
  chunks = [list(zip(files[i:i + model_batch], outputs[i:i + model_batch]))
            for i in range(0, len(files), model_batch)]

  def fail(path, error, doing):
    message = _error_message(path, error, doing)
    _log.warning("skipped: %s", message)
    report.failed.append((path, message))

  bar = tqdm.tqdm(total=len(files), unit="img", desc="colorize", file=sys.stderr,
                  disable=not progress, dynamic_ncols=True)
  # Warnings go through the bar's writer so they do not break its line.
  redirect_logs = tqdm_logging.logging_redirect_tqdm() if progress else contextlib.nullcontext()
  with concurrent.futures.ThreadPoolExecutor(_IO_THREADS) as pool, redirect_logs, bar:

    def submit_loads(chunk):
      return [pool.submit(_load, src, size) for (src, _), _ in chunk]

    loads = submit_loads(chunks[0])
    writes = []
    for i, chunk in enumerate(chunks):
      loaded = []
      for ((src, _), out), load in zip(chunk, loads):
        try:
          loaded.append((src, out, load.result()))
        except Exception as e:  # pylint: disable=broad-except
          fail(src, e, "read")
          bar.update(1)
      loads = submit_loads(chunks[i + 1]) if i + 1 < len(chunks) else []
      if loaded:
        l_BSS1 = np.zeros((model_batch, size, size, 1), np.float32)
        for j, (_, _, item) in enumerate(loaded):
          l_BSS1[j] = item.l_SS1
        prediction_BhwC = predict(colorizer, l_BSS1)
      _collect_writes(writes, report, fail, bar)
      writes = [(src, out, pool.submit(_finish, item.rgb_HW3, prediction_BhwC[j], is_rgb, out))
                for j, (src, out, item) in enumerate(loaded)]
      del loaded
    _collect_writes(writes, report, fail, bar)
  report.seconds = time.perf_counter() - start
  return report


def _collect_writes(writes, report: ColorizeReport, fail, bar) -> None:
  for src, out, future in writes:
    try:
      future.result()
      report.written.append(out)
    except Exception as e:  # pylint: disable=broad-except
      fail(src, e, f"colorize or write {out} from")
    bar.update(1)


def _as_list(inputs) -> list:
  return [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)


# ------------------------------------------------------------------------------------------------
# Command-line entry
# ------------------------------------------------------------------------------------------------


def run(inputs: Sequence[str | os.PathLike] | str | os.PathLike, output: str | os.PathLike, *,
        checkpoint: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
        step: int | None = None, temperature: float | None = None, size: int | None = None,
        batch_size: int = 8, progress: bool = True) -> int:
  """`colorjax colorize`: loads a model, colorizes `inputs` into `output`, prints a summary.

  Exactly one model source: `checkpoint` (an exported colorjax model or a training workdir;
  `step` picks a checkpoint of a workdir, default the latest) or `weights` (the official ECCV16
  PyTorch state_dict file, e.g. `colorization_release_v2-9b330a0b.pth`). `temperature` overrides
  the annealed-mean temperature of a 313-bin model.

  Returns:
    The exit status: 0 when every image was written, 1 when any failed or none was found.
  """
  if (checkpoint is None) == (weights is None):
    raise ValueError(
        "give exactly one model: checkpoint= (a colorjax model or training directory) or "
        "weights= (the official ECCV16 PyTorch .pth file)"
        + (", not both" if checkpoint is not None else ""))
  if weights is not None:
    if step is not None:
      raise ValueError("step= selects a checkpoint of a training directory; it does not apply "
                       f"to the weights file {weights}")
    colorizer = inference.Colorizer.from_torch_eccv16(weights, temperature)
  else:
    colorizer = inference.Colorizer.from_checkpoint(checkpoint, step, temperature)

  report = colorize_paths(inputs, output, colorizer, size=size, batch_size=batch_size,
                          progress=progress)
  print(f"colorize: written {len(report.written)}, failed {len(report.failed)} "
        f"in {report.seconds:.1f} s ({report.images_per_second:.2f} images/s) -> {output}")
  for path, message in report.failed:
    print(f"  failed: {images.display_name(path)}: {message}", file=sys.stderr)
  if not report.written and not report.failed:
    print(f"colorize: no image files found in {', '.join(map(str, _as_list(inputs)))}",
          file=sys.stderr)
    return 1
  return 1 if report.failed else 0
