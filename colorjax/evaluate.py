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

import csv
import dataclasses
import functools
import json
import logging
import pathlib
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from colorjax import color, images, inference, metrics, sharding

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


def compare_to_truth(l_BHW1, ab_pred_BHW2, rgb_true_BHW3, valid_B) -> dict[str, jax.Array]:
  """Metrics of a prediction and of the gray baseline for one batch (jit-able).

  Returns per-image arrays `model/<key>`, `gray/<key>`, `truth/colorfulness` and the per-bin
  error histograms `model/hist`, `gray/hist` (padding images, valid=False, count nothing).
  """
  true_rgb = rgb_true_BHW3.astype(jnp.float32) / 255.0
  ab_true = color.rgb_to_lab(true_rgb)[..., 1:]
  out = {"truth/colorfulness": metrics.colorfulness(true_rgb)}
  # The gray baseline as ab*0 rather than a constant zeros array: XLA would otherwise spend
  # seconds constant-folding the metrics of the constant.
  for name, ab in (("model", ab_pred_BHW2), ("gray", ab_pred_BHW2 * 0.0)):
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


def _eval_step(variables, rgb_BHW3, valid_B, *, generator, model_cfg):
  lab = color.rgb_to_lab(rgb_BHW3)
  l = lab[..., :1]
  ab = inference.predict_ab(generator, variables, l, model_cfg)
  ab = inference.resize_ab_to(ab, *rgb_BHW3.shape[1:3])
  return compare_to_truth(l, ab, rgb_BHW3, valid_B), ab


def eval_variables(state: Mapping[str, Any]) -> dict[str, Any]:
  """The generator variables evaluated: its EMA params when the run keeps one."""
  gen = state["gen"]
  return {"params": gen.get("ema_params", gen["params"]), "batch_stats": gen["batch_stats"]}


class Evaluator:
  """Runs the 'center' protocol on the held-out split; logs metrics and a gray|model|truth grid."""

  def __init__(self, config, generator, mesh):
    from colorjax import data  # pylint: disable=g-import-not-at-top
    self._data = data
    self.config = config
    self.mesh = mesh
    devices = mesh.devices.size
    self.batch_size = -(-config.train.eval_batch_size // devices) * devices
    step = functools.partial(_eval_step, generator=generator,
                             model_cfg=dict(config.model))
    self._step = jax.jit(step, out_shardings=sharding.replicated(mesh))

  def run(self, state, source, step: int, writer) -> dict[str, float]:
    acc = Accumulator()
    grid_rows = []
    variables = eval_variables(state)
    limit = self.config.data.eval_images or None
    seen = 0
    for batch in self._data.create_eval_batches(source, image_size=self.config.data.eval_size,
                                                batch_size=self.batch_size):
      valid = np.asarray(batch["mask"], bool)
      if limit is not None:
        keep = max(0, limit - seen)
        valid = valid & (np.cumsum(valid) <= keep)
      if not valid.any():
        break
      seen += int(valid.sum())
      lo, hi = _process_slice(self.batch_size)
      global_batch = sharding.shard_batch(
          {"rgb": batch["rgb"][lo:hi], "valid": valid[lo:hi]}, self.mesh)
      results, ab = self._step(variables, global_batch["rgb"], global_batch["valid"])
      acc.add(results, batch["name"], valid)
      if len(grid_rows) < self.config.train.samples:
        grid_rows += _grid_rows(batch["rgb"], np.asarray(jax.device_get(ab)), valid,
                                self.config.train.samples - len(grid_rows))
    if not acc.rows:  # every eval file unreadable: the run goes on, without eval metrics
      logging.getLogger("colorjax").warning(
          "eval at step %d: no readable image among the %d of the eval set; no eval metrics",
          step, len(source))
      return {}
    result = acc.result("center")
    flat = flatten(result)
    writer.write_scalars(step, flat)
    if grid_rows:
      grid = metrics.image_grid(grid_rows)
      writer.write_images(step, {"eval/gray_model_truth": grid})
      if jax.process_index() == 0 and writer.workdir is not None:
        from PIL import Image  # pylint: disable=g-import-not-at-top
        samples = pathlib.Path(writer.workdir) / "samples"
        samples.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(samples / f"step_{step:08d}.png")
    return flat


def _process_slice(global_batch: int) -> tuple[int, int]:
  """This process's rows of a global batch that every process reads in full."""
  per = global_batch // jax.process_count()
  return jax.process_index() * per, (jax.process_index() + 1) * per


def _grid_rows(rgb_BHW3, ab_BHW2, valid, n):
  rows = []
  for rgb, ab, ok in zip(rgb_BHW3, ab_BHW2, valid):
    if len(rows) == n:
      break
    if not ok:
      continue
    l = color.rgb_to_lab(rgb)[..., :1]
    gray = color.rgb_to_uint8(color.lab_to_rgb(np.concatenate([l, np.zeros_like(ab)], -1)))
    model = color.rgb_to_uint8(color.lab_to_rgb(np.concatenate([l, ab], -1)))
    rows.append((gray, model, rgb))
  return rows


# ----------------------------------------------------------------------------------------------
# `colorjax eval`: a model over a folder or dataset, either protocol
# ----------------------------------------------------------------------------------------------


def _center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  h, w = rgb.shape[:2]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BICUBIC))
  top, left = (nh - size) // 2, (nw - size) // 2
  return resized[top:top + size, left:left + size]


def evaluate_images(colorizer, images: Iterable[tuple[str, np.ndarray]], *, protocol: str = "full",
                    size: int | None = None, prior: np.ndarray | None = None,
                    progress: bool = True, fid_variables=None, fid_batch_size: int = 16,
                    ) -> tuple[dict[str, Any], Accumulator]:
  """Evaluates a `inference.Colorizer` on (name, uint8 RGB) pairs; returns (result, accumulator).

  With `fid_variables` (`fid.load_inception(path)`), the model and gray sections get an 'fid'
  against the ground truths (the paired protocol documented in `colorjax.fid`).
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  if protocol not in ("full", "center"):
    raise ValueError(f"protocol must be 'full' or 'center', got {protocol!r}")
  size = size or colorizer.size
  acc = Accumulator(prior=prior)
  fid_acc = None
  if fid_variables is not None:
    from colorjax import fid  # pylint: disable=g-import-not-at-top
    fid_acc = fid.FidAccumulator(fid_variables, names=("model", "gray"), batch_size=fid_batch_size)
  for name, rgb in tqdm(images, desc="eval", unit="img", disable=not progress):
    if protocol == "center":
      rgb = _center_crop(rgb, size)
    small = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BICUBIC))
    l_small = color.rgb_to_lab(small)[None, ..., :1]
    ab = colorizer(l_small)[0]
    ab_full = color.resize_ab_bilinear(ab, *rgb.shape[:2])
    l_full = color.rgb_to_lab(rgb)[..., :1]
    results = compare_to_truth(jnp.asarray(l_full[None]), jnp.asarray(ab_full[None]),
                               jnp.asarray(rgb[None]), jnp.ones((1,), bool))
    acc.add(results, [name], [True])
    if fid_acc is not None:
      def as_rgb(ab):
        return color.rgb_to_uint8(color.lab_to_rgb(np.concatenate([l_full, ab], -1)))
      fid_acc.add(rgb, model=as_rgb(ab_full), gray=as_rgb(np.zeros_like(ab_full)))
  result = acc.result(protocol)
  if fid_acc is not None:
    if len(acc.rows) < 2:
      raise ValueError("FID needs at least 2 evaluated images")
    for name, value in fid_acc.result().items():
      result[name]["fid"] = value
    result["fid_protocol"] = ("colorized vs their own ground truths, each at the evaluated "
                              "resolution resized to 299x299 (pytorch-fid preprocessing); not "
                              "comparable with ImageNet FID-5K/50K numbers")
  return result, acc
