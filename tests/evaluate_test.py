"""Tests of colorjax.evaluate: dataset metrics against hand computations, protocols, JSON/CSV."""
import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor

from colorjax import color, evaluate


def _hand_aucs(err, bins):
  """Raw and rebalanced AuC (thresholds 0..150, mean over thresholds) computed directly."""
  t = np.arange(151)
  within = err[:, None] <= t[None, :]
  raw = within.mean()
  counts = np.bincount(bins, minlength=313).astype(float)
  p = counts / counts.sum()
  w = 1.0 / p[bins]
  rebalanced = ((w[:, None] * within).sum(0) / w.sum()).mean()
  return raw, rebalanced


def _images(photos_dir, n=3, size=24):
  out = []
  for path in sorted(photos_dir.iterdir())[:n]:
    out.append(np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)))
  return out


def test_gray_baseline_auc_matches_hand_computation(photos_dir):
  rgbs = _images(photos_dir)
  acc = evaluate.Accumulator()
  errs, bins = [], []
  for i, rgb in enumerate(rgbs):
    lab = color.rgb_to_lab(rgb)
    results = evaluate.compare_to_truth(jnp.asarray(lab[None, ..., :1]),
                                        jnp.asarray(lab[None, ..., 1:]) * 0.5,
                                        jnp.asarray(rgb[None]), jnp.ones((1,), bool))
    acc.add(results, [f"folder{i % 2}/img{i}.png"], [True])
    ab_true = skcolor.rgb2lab(rgb / 255.0)[..., 1:].reshape(-1, 2)
    errs.append(np.sqrt((ab_true**2).sum(-1)))
    d2 = ((ab_true[:, None, :] - color.AB_BINS[None].astype(np.float64)) ** 2).sum(-1)
    bins.append(d2.argmin(-1))
  result = acc.result("center")
  raw, rebalanced = _hand_aucs(np.concatenate(errs), np.concatenate(bins))
  assert result["gray"]["auc"] == pytest.approx(raw, abs=2e-3)
  assert result["gray"]["auc_rebalanced"] == pytest.approx(rebalanced, abs=2e-3)
  # Half the true ab is closer than none of it, in every pixel.
  assert result["model"]["auc"] > result["gray"]["auc"]
  assert result["images"] == 3 and result["protocol"] == "center"
  for section in ("model", "gray"):
    assert set(result[section]) >= {"psnr", "ssim", "mse", "auc", "auc_rebalanced",
                                     "colorfulness", "top1_bin_accuracy"}
  assert result["gray"]["colorfulness"] == pytest.approx(0.0, abs=0.5)
  assert set(result["truth"]) == {"colorfulness"}


def test_padding_images_count_nothing(photos_dir):
  rgbs = _images(photos_dir, 2)
  batch = np.stack([rgbs[0], rgbs[1]])
  lab = color.rgb_to_lab(batch)
  l, ab = jnp.asarray(lab[..., :1]), jnp.asarray(lab[..., 1:])
  one = evaluate.compare_to_truth(l[:1], ab[:1] * 0, jnp.asarray(batch[:1]), jnp.ones((1,), bool))
  two = evaluate.compare_to_truth(l, ab * 0, jnp.asarray(batch), jnp.asarray([True, False]))
  np.testing.assert_allclose(one["gray/hist"], two["gray/hist"])


def test_perfect_prediction_scores_one_and_writes_json_and_csv(photos_dir, tmp_path):
  rgb = _images(photos_dir, 1, 32)[0]
  lab = color.rgb_to_lab(rgb)

  class Oracle:
    size = 32

    def __call__(self, l_BHW1):
      return np.broadcast_to(lab[..., 1:], l_BHW1.shape[:1] + lab[..., 1:].shape)

  result, acc = evaluate.evaluate_images(Oracle(), [("a/b.png", rgb)], protocol="full",
                                         progress=False)
  # Float rounding makes some errors not exactly 0, so only threshold t=0 may miss them.
  assert result["model"]["auc"] >= 1.0 - 1.0 / 151 - 1e-6
  assert result["model"]["top1_bin_accuracy"] == pytest.approx(1.0)
  assert result["model"]["psnr"] > 40
  acc.write(result, tmp_path / "m.json", tmp_path / "m.csv")
  loaded = json.loads((tmp_path / "m.json").read_text())
  assert loaded["model"]["auc"] == result["model"]["auc"]
  rows = list(csv.DictReader(open(tmp_path / "m.csv")))
  assert rows[0]["image"] == "a/b.png" and float(rows[0]["model/psnr"]) > 40


def test_flatten_names_keys_for_the_writer():
  flat = evaluate.flatten({"model": {"psnr": 20.0}, "images": 3, "protocol": "full"})
  assert flat == {"eval/model/psnr": 20.0, "eval/images": 3.0}


def test_fid_is_added_for_model_and_gray(photos_dir):
  import jax  # pylint: disable=g-import-not-at-top
  from colorjax import fid  # pylint: disable=g-import-not-at-top
  net = fid.InceptionV3()
  variables = jax.jit(lambda k: net.init(k, jnp.zeros((1, 75, 75, 3))))(jax.random.key(0, impl="rbg"))
  rgbs = _images(photos_dir, 3, 40)

  class Half:
    size = 40

    def __call__(self, l_BHW1):
      return np.zeros(l_BHW1.shape[:3] + (2,), np.float32) + 10.0

  result, _ = evaluate.evaluate_images(Half(), [(str(i), x) for i, x in enumerate(rgbs)],
                                       progress=False, fid_variables=variables)
  assert result["model"]["fid"] >= 0 and result["gray"]["fid"] >= 0
  assert result["model"]["fid"] != result["gray"]["fid"]
  assert "not comparable" in result["fid_protocol"]
