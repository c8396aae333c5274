"""Evaluation of a colorization model against ground truth, beside the gray baseline (ab = 0).

Two protocols (every result says which it used):
* 'full' (default of `colorjax eval`): each image goes through the colorize pipeline at its own
  resolution (resize to the model's input size, predict, upsample ab to the original size, join
  the original L); metrics on the full-resolution result.
* 'center': resize the short side to `data.eval_size` and center crop (the 256x256 protocol of
  published tables, and the periodic eval during training, which needs fixed shapes).

Per-image metrics (PSNR, SSIM, MSE, colorfulness, AuC, top-1 bin accuracy) are averaged over
images. The dataset AuC pools all pixels; its class-rebalanced form weights each pixel by the
inverse prior probability of its ground-truth bin (λ=0), with the evaluation set's own prior
unless one is given, accumulated in one pass as per-bin error histograms.
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import dataclasses
import functools
import itertools
import json
import logging
import os
import pathlib
import time
from typing import Any, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import color, colorization, data, fid, images, inference, metrics
from colorjax import sharding
from colorjax.models import heads

_log = logging.getLogger(__name__)
PER_IMAGE_KEYS = ("psnr", "ssim", "mse", "auc", "colorfulness", "top1_bin_accuracy")
_NUM_T = metrics.AUC_THRESHOLDS.shape[0]


def per_bin_error_histogram(ab_pred_BHW2, ab_true_BHW2, valid_B) -> jax.Array:
  """(313, T+1) pixel counts by ground-truth bin and first AuC threshold the error meets."""
  error = jnp.sqrt(jnp.sum((ab_pred_BHW2 - ab_true_BHW2) ** 2, axis=-1))
  first_t = jnp.searchsorted(jnp.asarray(metrics.AUC_THRESHOLDS), error, side="left")
  segment = color.nearest_bin(ab_true_BHW2) * (_NUM_T + 1) + first_t
  weights = jnp.broadcast_to(valid_B[:, None, None].astype(jnp.float32), error.shape)
  hist = jax.ops.segment_sum(weights.reshape(-1), segment.reshape(-1),
                             num_segments=color.Q * (_NUM_T + 1))
  return hist.reshape(color.Q, _NUM_T + 1)


def compare_to_truth(l_BHW1, ab_pred_BHW2, rgb_true_BHW3, valid_B,
                     rgb_pred_BHW3=None) -> dict[str, jax.Array]:
  """Metrics of a prediction and of the gray baseline for one batch (jit-able).

  The model's RGB is its ab joined with the true L, or `rgb_pred_BHW3` (in [0, 1]) for a model
  that predicts RGB; then `ab_pred_BHW2` must be the ab of that RGB.
  Returns per-image arrays `model/<key>`, `gray/<key>`, `truth/colorfulness` and the per-bin
  error histograms `model/hist`, `gray/hist` (padding images, valid=False, count nothing).
  """
  true_rgb = rgb_true_BHW3.astype(jnp.float32) / 255.0
  ab_true = color.rgb_to_lab(true_rgb)[..., 1:]
  out = {"truth/colorfulness": metrics.colorfulness(true_rgb)}
  # The gray baseline as ab*0 rather than a constant zeros array: XLA would otherwise spend
  # seconds constant-folding the metrics of the constant.
  for name, ab in (("model", ab_pred_BHW2), ("gray", ab_pred_BHW2 * 0.0)):
    if name == "model" and rgb_pred_BHW3 is not None:
      rgb = rgb_pred_BHW3.astype(jnp.float32)
    else:
      rgb = color.lab_to_rgb(jnp.concatenate([l_BHW1, ab], axis=-1))
    out[f"{name}/psnr"] = metrics.psnr(rgb, true_rgb)
    out[f"{name}/ssim"] = metrics.ssim(rgb, true_rgb)
    out[f"{name}/mse"] = metrics.mse(rgb, true_rgb)
    out[f"{name}/auc"] = metrics.auc(ab, ab_true)
    out[f"{name}/colorfulness"] = metrics.colorfulness(rgb)
    out[f"{name}/top1_bin_accuracy"] = metrics.top1_bin_accuracy(ab, ab_true)
    out[f"{name}/hist"] = per_bin_error_histogram(ab, ab_true, valid_B)
  return out


@dataclasses.dataclass
class Accumulator:
  """Sums batch results into dataset metrics and per-image rows."""
  prior: np.ndarray | None = None
  rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  hists: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0

  def add_row(self, name: str, row: Mapping[str, float], hists: Mapping[str, np.ndarray]) -> None:
    """One image's results (`image_results`)."""
    for key in ("model/hist", "gray/hist"):
      self.hists[key] = self.hists.get(key, 0) + np.asarray(hists[key], np.float64)
    self.rows.append({"image": images.display_name(name), **row})  # non-UTF-8 names as \xNN

  def add(self, results: Mapping[str, Any], names: Iterable[str], valid) -> None:
    results = jax.device_get(results)
    valid = np.asarray(valid, bool)
    for key in ("model/hist", "gray/hist"):
      self.hists[key] = self.hists.get(key, 0) + np.asarray(results[key], np.float64)
    for i, name in enumerate(names):
      if not valid[i]:
        continue
      row = {"image": images.display_name(name)}  # a non-UTF-8 file name writes as \xNN
      for key, value in results.items():
        if not key.endswith("/hist"):
          row[key] = float(np.asarray(value)[i])
      self.rows.append(row)

  def _aucs(self, hist: np.ndarray, class_prior: np.ndarray) -> tuple[float, float]:
    within = np.cumsum(hist[:, :_NUM_T], axis=1)     # (313, T)
    per_bin_total = hist.sum(axis=1)                 # (313,)
    raw = within.sum(0).mean() / per_bin_total.sum()
    safe_prior = np.where(class_prior > 0, class_prior, 1.0)
    w = np.where(class_prior > 0, 1.0 / safe_prior, 0.0)
    rebalanced = (w @ within).mean() / (w @ per_bin_total)
    return float(raw), float(rebalanced)

  def result(self, protocol: str) -> dict[str, Any]:
    if not self.rows:
      raise ValueError("no image was evaluated (empty or unreadable evaluation set)")
    counts = self.hists["model/hist"].sum(axis=1)    # pixels per ground-truth bin
    class_prior = counts / counts.sum() if self.prior is None else np.asarray(self.prior)
    out: dict[str, Any] = {"images": len(self.rows), "protocol": protocol,
                           "prior": "evaluation set" if self.prior is None else "given"}
    for name in ("model", "gray"):
      section = {k: float(np.mean([r[f"{name}/{k}"] for r in self.rows])) for k in PER_IMAGE_KEYS}
      section["auc_per_image_mean"] = section.pop("auc")
      section["auc"], section["auc_rebalanced"] = self._aucs(self.hists[f"{name}/hist"],
                                                             class_prior)
      out[name] = section
    truth_c = float(np.mean([r["truth/colorfulness"] for r in self.rows]))
    out["truth"] = {"colorfulness": truth_c}
    out["model"]["colorfulness_gap"] = out["model"]["colorfulness"] - truth_c
    out["gray"]["colorfulness_gap"] = out["gray"]["colorfulness"] - truth_c
    return out

  def write(self, result: Mapping[str, Any], json_path, csv_path=None) -> None:
    json_path = pathlib.Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2))
    if csv_path is not None and self.rows:
      with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
        writer.writeheader()
        writer.writerows(self.rows)


def flatten(result: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
  """{'model': {'psnr': x}} -> {'eval/model/psnr': x} for scalar writers and best-checkpoint keys."""
  flat = {}
  for section, values in result.items():
    if isinstance(values, Mapping):
      for key, value in values.items():
        flat[f"{prefix}/{section}/{key}"] = float(value)
    elif isinstance(values, (int, float)):
      flat[f"{prefix}/{section}"] = float(values)
  return flat


# ----------------------------------------------------------------------------------------------
# Periodic evaluation during training ('center' protocol, batched on the mesh)
# ----------------------------------------------------------------------------------------------


def eval_step(predict_fn, variables, rgb_BHW3, valid_B):
  """One batch of the 'center' protocol: (`compare_to_truth`'s results, the model's RGB in [0, 1]).

  `predict_fn(variables, l_BHW1)` takes L in [0, 100] and returns ab in Lab units `(B, h, w, 2)`,
  or the RGB in [0, 1] `(B, h, w, 3)` of a model that predicts RGB, at any resolution; it is
  upsampled bilinearly to the batch's.
  """
  lab = color.rgb_to_lab(rgb_BHW3)
  l = lab[..., :1]
  prediction = predict_fn(variables, l)
  batch = l.shape[0]
  if prediction.ndim != 4 or prediction.shape[0] != batch or prediction.shape[-1] not in (2, 3):
    raise ValueError(f"the predict function returned shape {prediction.shape} for L of shape "
                     f"{l.shape}; expected ab ({batch}, h, w, 2) or RGB ({batch}, h, w, 3)")
  prediction = heads.resize_to(prediction.astype(jnp.float32), *rgb_BHW3.shape[1:3])
  if prediction.shape[-1] == 3:
    ab = color.rgb_to_lab(prediction)[..., 1:]
    return compare_to_truth(l, ab, rgb_BHW3, valid_B, prediction), prediction
  return compare_to_truth(l, prediction, rgb_BHW3, valid_B), color.lab_to_rgb(
      jnp.concatenate([l, prediction], axis=-1))


def process_rows(global_batch: int, process_index: int | None = None,
                 process_count: int | None = None) -> slice:
  """This process's rows of a global batch that every process reads in full (the eval data is
  split across processes here, after reading, so that every process knows every row's result)."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch % process_count:
    raise ValueError(f"an eval batch of {global_batch} does not split over {process_count} "
                     "processes")
  per = global_batch // process_count
  return slice(process_index * per, (process_index + 1) * per)


class Evaluator:
  """The 'center' protocol on a held-out set, for the periodic evaluation during training.

  Built from a predict function and the evaluator's own settings (not a config), in the manner
  of big_vision's evaluators; `train.create_evaluator` builds it from a config:

    evaluator = Evaluator(predict_fn, eval_source, mesh, batch_size=8, image_size=256)
    metrics, grid = evaluator.run(variables)   # {'eval/model/psnr': ..., ...}, uint8 grid

  Args:
    predict_fn: `predict_fn(variables, l_BHW1)`, see `eval_step`; jitted with the step.
    source: the evaluation images, a `data.ImageSource` (`data.image_source(spec)`), opened once.
    mesh: the device mesh; a batch is split over its 'data' axis.
    batch_size: images per step (rounded up to a multiple of the mesh's devices).
    image_size: the side the images are resized (short side) and center cropped to.
    max_images: evaluate the first this many readable images only (0 = all).
    samples: images in the gray | model | truth grid `run` returns (0 = no grid).
    fid_variables: the InceptionV3 of `inception.load_inception`: adds `eval/model/fid` and
      `eval/gray/fid`, the FID of the colorized and of the gray images against their ground
      truths (`colorjax.fid`'s paired protocol; needs at least 2 images).
    fid_batch_size: images per InceptionV3 call.
  """

  def __init__(self, predict_fn, source, mesh, *, batch_size: int, image_size: int,
               max_images: int = 0, samples: int = 0, fid_variables=None,
               fid_batch_size: int = 16):
    devices = mesh.devices.size
    self.source = source
    self.mesh = mesh
    self.batch_size = -(-batch_size // devices) * devices
    self.image_size = image_size
    self.max_images = max_images
    self.samples = samples
    self.fid_variables = fid_variables
    self.fid_batch_size = fid_batch_size
    self.step = jax.jit(functools.partial(eval_step, predict_fn),
                        out_shardings=sharding.replicated(mesh))

  def run(self, variables) -> tuple[dict[str, float], np.ndarray | None]:
    """Evaluates `variables` (what `predict_fn` takes): (the flat metrics, `flatten`'s keys; the
    gray | model | truth grid, uint8, or None). No readable image: ({}, None) and a warning."""
    acc = Accumulator()
    fid_acc = (None if self.fid_variables is None else fid.FidAccumulator(
        self.fid_variables, names=("model", "gray"), batch_size=self.fid_batch_size))
    grid_rows = []
    seen = 0
    rows = process_rows(self.batch_size)
    for batch in data.create_eval_batches(self.source, image_size=self.image_size,
                                          batch_size=self.batch_size):
      valid = np.asarray(batch["mask"], bool)
      if self.max_images:
        valid = valid & (np.cumsum(valid) <= max(0, self.max_images - seen))
      if not valid.any():
        break
      seen += int(valid.sum())
      global_batch = sharding.shard_batch(
          {"rgb": batch["rgb"][rows], "valid": valid[rows]}, self.mesh)
      results, model_rgb = self.step(variables, global_batch["rgb"], global_batch["valid"])
      acc.add(results, batch["name"], valid)
      if fid_acc is None and len(grid_rows) >= self.samples:
        continue
      model_rgb = np.asarray(jax.device_get(model_rgb))
      for truth, model, ok in zip(batch["rgb"], model_rgb, valid):
        if not ok:
          continue
        model, gray = color.rgb_to_uint8(model), _gray_rgb(truth)
        if fid_acc is not None:
          fid_acc.add(truth, model=model, gray=gray)
        if len(grid_rows) < self.samples:
          grid_rows.append((gray, model, truth))
    if not acc.rows:  # every eval file unreadable: the run goes on, without eval metrics
      _log.warning(
          "eval: no readable image among the %d of the eval set; no eval metrics",
          len(self.source))
      return {}, None
    result = acc.result("center")
    if fid_acc is not None:
      if len(acc.rows) < 2:
        _log.warning(
            "eval: FID needs at least 2 images, only %d was readable; no FID", len(acc.rows))
      else:
        for name, value in fid_acc.result().items():
          result[name]["fid"] = value
    return flatten(result), (metrics.image_grid(grid_rows) if grid_rows else None)


def _gray_rgb(rgb_HW3: np.ndarray) -> np.ndarray:
  """The gray baseline of a photo: its L with ab = 0, as uint8 RGB."""
  return color.rgb_to_uint8(_gray_rgb_of_l(color.rgb_to_lab(rgb_HW3)[..., :1]))


def _gray_rgb_of_l(l_HW1: np.ndarray) -> np.ndarray:
  """sRGB in [0, 1] of the lightness `l_HW1` with ab = 0 (numpy)."""
  zero_ab = np.zeros(l_HW1.shape[:-1] + (2,), l_HW1.dtype)
  return color.lab_to_rgb(np.concatenate([l_HW1, zero_ab], -1))


# ----------------------------------------------------------------------------------------------
# `colorjax eval`: a model over a folder or dataset, either protocol
# ----------------------------------------------------------------------------------------------


def _prepare(rgb_HW3: np.ndarray, protocol: str, size: int) -> tuple[np.ndarray, np.ndarray]:
  """(the image evaluated, the model's input L) for one photo."""
  if protocol == "center":
    rgb_HW3 = data.center_crop_resize(rgb_HW3, size)
  return rgb_HW3, colorization.model_input_l(rgb_HW3, size)


def image_results(true_rgb_HW3: np.ndarray, prediction_hwC: np.ndarray, is_rgb: bool = False,
                  with_images: bool = False):
  """Metrics of one photo at its own resolution, of the model and of the gray baseline (numpy).

  Args:
    true_rgb_HW3: the ground truth, uint8 sRGB.
    prediction_hwC: the model's prediction at its output resolution: ab in Lab units, or with
      `is_rgb` its RGB in [0, 1]. It is upsampled bilinearly to the photo's size; ab is joined
      with the photo's own L, an RGB prediction is the result itself (its ab, for the AuC and bin
      accuracy, is that of its Lab).
    with_images: also return the model's and the gray baseline's uint8 RGB (for FID).

  Returns:
    (row, hists, images): `row` has the same per-image keys as `compare_to_truth` (floats),
    `hists` its `model/hist` and `gray/hist` (313, T+1) counts, `images` (model, gray) or None.
  """
  height, width = true_rgb_HW3.shape[:2]
  true_rgb = np.asarray(true_rgb_HW3, np.float32) / 255.0
  true_lab = color.rgb_to_lab(np.asarray(true_rgb_HW3))  # uint8: linearised by table look-up
  l, true_ab = true_lab[..., :1], true_lab[..., 1:]
  upsampled = color.resize_ab_bilinear(prediction_hwC, height, width)
  if is_rgb:
    model_rgb = np.clip(upsampled, 0.0, 1.0)
    model_ab = color.rgb_to_lab(model_rgb)[..., 1:]
  else:
    model_ab = upsampled
    model_rgb = color.lab_to_rgb(np.concatenate([l, model_ab], axis=-1))
  gray_ab = np.zeros_like(true_ab)
  gray_rgb = _gray_rgb_of_l(l)
  true_bins = color.nearest_bin_numpy(true_ab)
  true_statistics = metrics.ssim_statistics(true_rgb)
  row = {"truth/colorfulness": metrics.colorfulness_numpy(true_rgb)}
  hists = {}
  pixels = height * width
  for name, rgb, ab in (("model", model_rgb, model_ab), ("gray", gray_rgb, gray_ab)):
    mse = metrics.mse_numpy(rgb, true_rgb)
    row[f"{name}/psnr"] = metrics.psnr_from_mse(mse)
    row[f"{name}/ssim"] = metrics.ssim_numpy(rgb, true_rgb, true_statistics)
    row[f"{name}/mse"] = mse
    error = np.sqrt(np.sum(np.square(ab - true_ab), axis=-1))
    first_t = np.searchsorted(metrics.AUC_THRESHOLDS, error, side="left")
    hist = np.bincount((true_bins * (_NUM_T + 1) + first_t).ravel(),
                       minlength=color.Q * (_NUM_T + 1)).reshape(color.Q, _NUM_T + 1)
    within = np.cumsum(hist.sum(axis=0)[:_NUM_T])
    row[f"{name}/auc"] = float(within.mean() / pixels)
    row[f"{name}/colorfulness"] = metrics.colorfulness_numpy(rgb)
    row[f"{name}/top1_bin_accuracy"] = float(
        np.count_nonzero(color.nearest_bin_numpy(ab) == true_bins) / pixels)
    hists[f"{name}/hist"] = hist
  images = ((color.rgb_to_uint8(model_rgb), color.rgb_to_uint8(gray_rgb)) if with_images
            else None)
  return row, hists, images


def _chunks(items: Iterable, n: int) -> Iterator[list]:
  iterator = iter(items)
  while chunk := list(itertools.islice(iterator, n)):
    yield chunk


def evaluate_images(colorizer, images: Iterable[tuple[str, np.ndarray]], *, protocol: str = "full",
                    size: int | None = None, prior: np.ndarray | None = None,
                    progress: bool = True, fid_variables=None, fid_batch_size: int = 16,
                    batch_size: int = 8, threads: int | None = None,
                    ) -> tuple[dict[str, Any], Accumulator]:
  """Evaluates a `inference.Colorizer` on (name, uint8 RGB) pairs; returns (result, accumulator).

  The model predicts `batch_size` photos at a time (the last batch padded, so it compiles once);
  each photo's metrics are computed at its own resolution in numpy (`image_results`) by `threads`
  worker threads while the model predicts the next batch. Photos are read from `images` as they
  are needed and dropped once measured, so memory does not grow with their number. A model that
  predicts RGB is evaluated from its RGB (the result's "output" says "rgb"; else "ab").
  `accumulator.seconds` is the wall time taken.

  With `fid_variables` (`inception.load_inception(path)`), the model and gray sections get an 'fid'
  against the ground truths (the paired protocol documented in `colorjax.fid`).
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if protocol not in ("full", "center"):
    raise ValueError(f"protocol must be 'full' or 'center', got {protocol!r}")
  if int(batch_size) != batch_size or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  start = time.perf_counter()
  size = size or colorizer.size
  is_rgb = colorization.predicts_rgb(colorizer)
  threads = threads or max(1, min(4, os.cpu_count() or 1))
  acc = Accumulator(prior=prior)
  fid_acc = None
  if fid_variables is not None:
    fid_acc = fid.FidAccumulator(fid_variables, names=("model", "gray"), batch_size=fid_batch_size)
  total = len(images) if hasattr(images, "__len__") else None
  bar = tqdm(total=total, desc="eval", unit="img", disable=not progress)
  # (name, ground truth kept for FID or None, future of image_results), in input order.
  pending = collections.deque()

  def collect(keep: int) -> None:
    while len(pending) > keep:
      name, true_rgb, future = pending.popleft()
      try:
        row, hists, result_images = future.result()
      except ValueError as e:
        raise ValueError(f"{name}: {e}") from None
      acc.add_row(name, row, hists)
      if fid_acc is not None:
        fid_acc.add(true_rgb, model=result_images[0], gray=result_images[1])
      bar.update(1)

  with concurrent.futures.ThreadPoolExecutor(threads) as pool, bar:
    chunks = _chunks(images, batch_size)

    def submit(chunk):
      return None if chunk is None else (chunk, [pool.submit(_prepare, rgb, protocol, size)
                                                 for _, rgb in chunk])

    loading = submit(next(chunks, None))
    model_batch = batch_size if loading is None else min(batch_size, len(loading[0]))
    while loading is not None:
      chunk, prepared = loading
      prepared = [p.result() for p in prepared]
      loading = submit(next(chunks, None))
      l_BSS1 = np.zeros((model_batch, size, size, 1), np.float32)
      for j, (_, l_SS1) in enumerate(prepared):
        l_BSS1[j] = l_SS1
      prediction_BhwC = colorization.predict(colorizer, l_BSS1)
      for j, ((name, _), (rgb, _)) in enumerate(zip(chunk, prepared)):
        future = pool.submit(image_results, rgb, prediction_BhwC[j], is_rgb, fid_acc is not None)
        pending.append((name, rgb if fid_acc is not None else None, future))
      del chunk, prepared
      # The metrics of this batch run while the next one is predicted; older ones are collected.
      collect(keep=model_batch)
    collect(keep=0)
  result = acc.result(protocol)
  result["output"] = "rgb" if is_rgb else "ab"
  if fid_acc is not None:
    if len(acc.rows) < 2:
      raise ValueError("FID needs at least 2 evaluated images")
    for name, value in fid_acc.result().items():
      result[name]["fid"] = value
    result["fid_protocol"] = ("colorized vs their own ground truths, each at the evaluated "
                              "resolution resized to 299x299 (pytorch-fid preprocessing); not "
                              "comparable with ImageNet FID-5K/50K numbers")
  acc.seconds = time.perf_counter() - start
  return result, acc
