"""Tests of colorjax.evaluate: dataset metrics against hand computations, protocols, JSON/CSV."""
import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor
from skimage import metrics as skmetrics

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


def test_fid_is_added_for_model_and_gray(photos_dir, inception_pth):
  from colorjax.models import inception  # pylint: disable=g-import-not-at-top
  # Random weights from a file: initialising InceptionV3 under jit compiles for ~20 s.
  variables = inception.load_inception(inception_pth)
  rgbs = _images(photos_dir, 2, 40)  # FID's minimum

  class Half:
    size = 40

    def __call__(self, l_BHW1):
      return np.zeros(l_BHW1.shape[:3] + (2,), np.float32) + 10.0

  # Batches of one image's three (truth, model, gray): no padding to run through InceptionV3.
  result, _ = evaluate.evaluate_images(Half(), [(str(i), x) for i, x in enumerate(rgbs)],
                                       progress=False, fid_variables=variables, fid_batch_size=3)
  assert result["model"]["fid"] >= 0 and result["gray"]["fid"] >= 0
  assert result["model"]["fid"] != result["gray"]["fid"]
  assert "not comparable" in result["fid_protocol"]


# ----------------------------------------------------------------------------------------------
# `colorjax eval`'s full-resolution path: numpy per photo, model batched, streamed
# ----------------------------------------------------------------------------------------------


def _mixed_photos(photos_dir, sizes=((45, 61), (32, 32), (50, 38), (29, 70), (40, 44))):
  paths = sorted(photos_dir.glob("*.jpg"))
  return [(f"p{i}.png", np.asarray(Image.open(paths[i]).convert("RGB").resize((w, h),
                                                                             Image.BICUBIC)))
          for i, (h, w) in enumerate(sizes)]


def test_image_results_equal_the_jitted_batch_metrics(photos_dir):
  """The numpy metrics of one photo against `compare_to_truth`, for an ab and an RGB model."""
  rng = np.random.default_rng(0)
  name, rgb = _mixed_photos(photos_dir)[0]
  height, width = rgb.shape[:2]
  l = color.rgb_to_lab(rgb)[..., :1]
  # Jitted once (the model's RGB always given): op by op, a new shape compiles each of its
  # hundreds of operations, over a minute.
  reference = jax.jit(evaluate.compare_to_truth)
  for is_rgb in (False, True):
    prediction = (rng.uniform(0, 1, (12, 9, 3)) if is_rgb
                  else rng.uniform(-50, 50, (12, 9, 2))).astype(np.float32)
    row, hists, _ = evaluate.image_results(rgb, prediction, is_rgb)
    up = color.resize_ab_bilinear(prediction, height, width)
    if is_rgb:
      model_rgb, model_ab = up, color.rgb_to_lab(up)[..., 1:]
    else:
      model_rgb, model_ab = color.lab_to_rgb(np.concatenate([l, up], -1)), up
    expected = reference(jnp.asarray(l[None]), jnp.asarray(model_ab[None]), jnp.asarray(rgb[None]),
                         jnp.ones((1,), bool), jnp.asarray(model_rgb[None]))
    for key, value in row.items():
      assert value == pytest.approx(float(expected[key][0]), rel=1e-5, abs=1e-5), (is_rgb, key)
    for key, value in hists.items():
      # Nearest bins: exact here, float32 there; a pixel on a bin boundary may differ.
      assert np.abs(value - np.asarray(expected[key])).sum() <= 2, (is_rgb, key)


def test_full_resolution_gray_baseline_matches_skimage(photos_dir):
  photos = _mixed_photos(photos_dir)

  class Zero:
    size = 16

    def __call__(self, l_BHW1):
      return np.zeros(l_BHW1.shape[:1] + (4, 4, 2), np.float32)

  result, acc = evaluate.evaluate_images(Zero(), photos, progress=False, batch_size=2)
  errs, bins, psnrs, ssims = [], [], [], []
  for _, rgb in photos:
    true = rgb / 255.0
    lab = skcolor.rgb2lab(true)
    ab_true = lab[..., 1:].reshape(-1, 2)
    errs.append(np.sqrt((ab_true**2).sum(-1)))
    d2 = ((ab_true[:, None, :] - color.AB_BINS[None].astype(np.float64)) ** 2).sum(-1)
    bins.append(d2.argmin(-1))
    lab[..., 1:] = 0
    gray = skcolor.lab2rgb(lab)
    psnrs.append(skmetrics.peak_signal_noise_ratio(true, gray, data_range=1.0))
    ssims.append(skmetrics.structural_similarity(true, gray, channel_axis=-1, data_range=1.0,
                                                 gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False))
  raw, rebalanced = _hand_aucs(np.concatenate(errs), np.concatenate(bins))
  assert result["gray"]["auc"] == pytest.approx(raw, abs=2e-3)
  assert result["gray"]["auc_rebalanced"] == pytest.approx(rebalanced, abs=2e-3)
  assert result["gray"]["psnr"] == pytest.approx(np.mean(psnrs), abs=0.02)
  assert result["gray"]["ssim"] == pytest.approx(np.mean(ssims), abs=1e-3)
  assert result["images"] == len(photos) and result["output"] == "ab"
  assert [r["image"] for r in acc.rows] == [name for name, _ in photos]
  assert acc.seconds > 0


def test_evaluate_images_batches_streams_and_equals_per_photo_metrics(photos_dir):
  photos = _mixed_photos(photos_dir)
  yielded = []

  def lazily():
    for item in photos:
      yielded.append(item[0])
      yield item

  class Recording:
    size = 16

    def __init__(self):
      self.calls = []

    def __call__(self, l_BHW1):
      self.calls.append((l_BHW1.shape, len(yielded)))
      # ab from the input, so that each photo gets its own prediction
      return np.repeat(np.repeat(l_BHW1[:, ::4, ::4] - 50.0, 2, axis=-1), 1, axis=0)

  model = Recording()
  _, acc = evaluate.evaluate_images(model, lazily(), progress=False, batch_size=2)
  # One input shape (the last batch padded), and photos read a batch ahead, not all at once.
  assert [shape for shape, _ in model.calls] == [(2, 16, 16, 1)] * 3
  assert [seen for _, seen in model.calls] == [4, 5, 5]
  hists = {"model/hist": 0, "gray/hist": 0}
  for (name, rgb), row in zip(photos, acc.rows):
    small = np.asarray(Image.fromarray(rgb).resize((16, 16), Image.BICUBIC))
    expected, expected_hists, _ = evaluate.image_results(
        rgb, model(color.rgb_to_lab(small)[None, ..., :1])[0])
    assert row == {"image": name, **expected}
    for key in hists:
      hists[key] = hists[key] + expected_hists[key]
  for key in hists:
    np.testing.assert_array_equal(acc.hists[key], hists[key])
  assert acc.hists["model/hist"].sum() == sum(r.shape[0] * r.shape[1] for _, r in photos)


def test_rgb_model_is_evaluated_from_its_rgb(photos_dir):
  photos = _mixed_photos(photos_dir)[:2]
  red = np.array([0.8, 0.1, 0.1], np.float32)

  class Red:
    size = 16
    output = "rgb"

    def predict_rgb(self, l_BHW1):
      return np.broadcast_to(red, l_BHW1.shape[:3] + (3,)).copy()

  result, acc = evaluate.evaluate_images(Red(), photos, progress=False)
  assert result["output"] == "rgb"
  for (_, rgb), row in zip(photos, acc.rows):
    pred = np.broadcast_to(red, rgb.shape).astype(np.float64)
    # PSNR of the constant red picture itself, not of red chroma on the photo's lightness.
    assert row["model/psnr"] == pytest.approx(
        skmetrics.peak_signal_noise_ratio(rgb / 255.0, pred, data_range=1.0), abs=1e-3)
    assert row["model/colorfulness"] == pytest.approx(0.3 * np.hypot(
        255 * (red[0] - red[1]), 255 * (0.5 * (red[0] + red[1]) - red[2])), rel=1e-4)


def test_periodic_eval_of_an_rgb_model_measures_its_rgb(photos_dir):
  import functools  # pylint: disable=g-import-not-at-top
  from colorjax import config as config_lib, metrics, models  # pylint: disable=g-import-not-at-top
  model_cfg = dict(config_lib.load_config("seed003_unet_rgb:tiny").model)
  generator = models.create_generator(model_cfg, 32)
  variables = jax.jit(lambda k: generator.init(k, jnp.zeros((1, 32, 32, 1)), train=False))(
      jax.random.key(0, impl="rbg"))
  rgb = np.stack(_images(photos_dir, 2, 32))
  from colorjax import inference  # pylint: disable=g-import-not-at-top
  predict = functools.partial(inference.predict_rgb, generator, model_cfg=model_cfg)
  step = jax.jit(functools.partial(evaluate.eval_step, predict))
  results, model_rgb = step(variables, jnp.asarray(rgb), jnp.ones((2,), bool))
  model_rgb = np.asarray(model_rgb)
  # The random model's own picture: its lightness is not the photo's (no join with the true L)...
  l_error = np.abs(color.rgb_to_lab(model_rgb)[..., 0] - color.rgb_to_lab(rgb)[..., 0])
  assert l_error.mean() > 5
  # ...and it is what is measured.
  np.testing.assert_allclose(results["model/psnr"], metrics.psnr(model_rgb, rgb), rtol=1e-4)
  np.testing.assert_allclose(results["model/mse"], metrics.mse(model_rgb, rgb), rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# The periodic evaluation during training: `Evaluator`
# ----------------------------------------------------------------------------------------------


def test_process_rows_split_a_global_batch_in_order():
  for count in (1, 2, 4):
    rows = [evaluate.process_rows(8, p, count) for p in range(count)]
    assert [i for r in rows for i in range(8)[r]] == list(range(8))  # disjoint, complete
  assert evaluate.process_rows(8) == slice(0, 8)  # this single process reads it all
  with pytest.raises(ValueError, match="does not split over 3 processes"):
    evaluate.process_rows(8, 0, 3)


def _frechet_distance_with_scipy_sqrtm(x_ND, y_ND):
  """FID of two feature sets of N < D vectors: with A, B the centred sets over sqrt(N - 1), the
  covariances are A^T A and B^T B, and Tr sqrtm(S1 S2) = Tr sqrtm(M M^T), M = A B^T (N x N),
  which scipy's sqrtm computes accurately (the D x D product is singular)."""
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  x, y = np.asarray(x_ND, np.float64), np.asarray(y_ND, np.float64)
  a = (x - x.mean(0)) / np.sqrt(len(x) - 1)
  b = (y - y.mean(0)) / np.sqrt(len(y) - 1)
  m = a @ b.T
  trace_sqrt = np.trace(linalg.sqrtm(m @ m.T)).real
  diff = x.mean(0) - y.mean(0)
  return diff @ diff + np.sum(a * a) + np.sum(b * b) - 2 * trace_sqrt


def test_evaluator_measures_a_predict_function_with_fid_and_a_grid(photos_dir, tmp_path,
                                                                   inception_pth):
  from colorjax import data, fid, metrics, sharding  # pylint: disable=g-import-not-at-top
  from colorjax.models import inception  # pylint: disable=g-import-not-at-top
  # Three images: the smallest set whose centred features have rank > 1, so that the trace of
  # the square root is not just a norm.
  size, n = 32, 3
  folder = tmp_path / "eval"
  folder.mkdir()
  truths = _images(photos_dir, n + 1, size)  # one more than evaluated: max_images applies
  for i, rgb in enumerate(truths):
    Image.fromarray(rgb).save(folder / f"{i}.png")
  truths = truths[:n]

  def predict(variables, l_BHW1):  # constant chroma at half resolution, upsampled by the step
    return jnp.broadcast_to(variables["ab"], (l_BHW1.shape[0], size // 2, size // 2, 2))

  inception_variables = inception.load_inception(inception_pth)
  evaluator = evaluate.Evaluator(predict, data.image_source(folder), sharding.create_mesh(),
                                 batch_size=3, image_size=size, max_images=n, samples=2,
                                 fid_variables=inception_variables, fid_batch_size=3)
  assert evaluator.batch_size == 8  # rounded up to the 8 devices
  ab = np.array([12.0, -20.0])
  flat, grid = evaluator.run({"ab": jnp.asarray(ab, jnp.float32)})

  # References from skimage: the photo's L with the constant ab, and with ab = 0.
  model_rgbs, gray_rgbs = [], []
  for truth in truths:
    lab = skcolor.rgb2lab(truth)
    model_rgbs.append(skcolor.lab2rgb(np.concatenate(
        [lab[..., :1], np.broadcast_to(ab, lab.shape[:2] + (2,))], -1)))
    gray_rgbs.append(skcolor.lab2rgb(np.concatenate([lab[..., :1], 0 * lab[..., 1:]], -1)))
  to_u8 = lambda rgb: np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
  model_u8, gray_u8 = [to_u8(x) for x in model_rgbs], [to_u8(x) for x in gray_rgbs]

  assert flat["eval/images"] == n
  psnr = np.mean([skmetrics.peak_signal_noise_ratio(t / 255.0, m, data_range=1.0)
                  for t, m in zip(truths, model_rgbs)])
  assert flat["eval/model/psnr"] == pytest.approx(psnr, abs=1e-2)
  want_grid = metrics.image_grid(list(zip(gray_u8, model_u8, truths))[:2])
  assert grid.shape == want_grid.shape and grid.dtype == np.uint8
  assert np.abs(grid.astype(int) - want_grid).max() <= 1

  # FID: pool3 features of the same images, the distance by scipy's sqrtm.
  # One call of the shape the evaluator compiled, over 3n images (full batches, no padding).
  features = fid.pool3_features(inception_variables, truths + model_u8 + gray_u8, batch_size=3)
  real, model, gray = features[:n], features[n:2 * n], features[2 * n:]
  for key, fake in (("eval/model/fid", model), ("eval/gray/fid", gray)):
    assert np.isfinite(flat[key]) and flat[key] > 0
    assert flat[key] == pytest.approx(_frechet_distance_with_scipy_sqrtm(real, fake), rel=1e-3)
  assert flat["eval/model/fid"] != flat["eval/gray/fid"]


def test_evaluator_without_fid_or_samples_gives_neither(photos_dir, tmp_path):
  from colorjax import data, sharding  # pylint: disable=g-import-not-at-top
  folder = tmp_path / "eval"
  folder.mkdir()
  for i, rgb in enumerate(_images(photos_dir, 2, 16)):
    Image.fromarray(rgb).save(folder / f"{i}.png")
  source = data.image_source(folder)
  evaluator = evaluate.Evaluator(lambda v, l: jnp.zeros(l.shape[:3] + (2,)), source,
                                 sharding.create_mesh(), batch_size=8, image_size=16)
  flat, grid = evaluator.run({})
  assert grid is None and flat["eval/images"] == 2
  assert not any(key.endswith("/fid") for key in flat)
  # ab = 0 is the gray baseline itself.
  assert flat["eval/model/psnr"] == pytest.approx(flat["eval/gray/psnr"], abs=1e-4)
  bad = evaluate.Evaluator(lambda v, l: jnp.zeros(l.shape[:3] + (4,)), source,
                           sharding.create_mesh(), batch_size=8, image_size=16)
  with pytest.raises(ValueError, match=r"expected ab \(8, h, w, 2\) or RGB"):
    bad.run({})
