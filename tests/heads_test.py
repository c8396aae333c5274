"""Tests of colorjax.models.heads: each output kind's channels, decoding, targets and images."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import skimage.color
import torch

from colorjax import color, config as config_lib
from colorjax.models import heads

BINS = {"output": "bins", "temperature": 0.38, "convention": "eccv16"}
AB = {"output": "ab", "convention": "pix2pix"}
RGB = {"output": "rgb", "convention": "pix2pix"}


def test_out_channels_and_rgb_of_each_kind():
  assert [heads.out_channels(c) for c in (BINS, AB, RGB)] == [313, 2, 3]
  assert all(heads.out_channels({"output": kind}) > 0 for kind in config_lib.OUTPUTS)
  assert [heads.is_rgb(c) for c in (BINS, AB, RGB)] == [False, False, True]
  assert [heads.decodes_with_temperature(c) for c in (BINS, AB, RGB)] == [True, False, False]
  with pytest.raises(ValueError, match="unknown model.output 'xyz'"):
    heads.out_channels({"output": "xyz"})


def test_output_to_ab_for_each_output_kind():
  logits = jnp.zeros((1, 2, 2, 313)).at[..., 100].set(50.0)
  ab = heads.output_to_ab(logits, BINS)
  np.testing.assert_allclose(ab[0, 0, 0], color.AB_BINS[100], atol=1e-3)
  ab = heads.output_to_ab(jnp.full((1, 2, 2, 2), 0.5), AB)
  np.testing.assert_allclose(ab, 55.0)
  gray_rgb = jnp.zeros((1, 2, 2, 3))  # tanh range: 0 is mid-gray
  np.testing.assert_allclose(heads.output_to_ab(gray_rgb, RGB), 0.0, atol=5e-3)
  with pytest.raises(ValueError, match="'xyz'"):
    heads.output_to_ab(gray_rgb, {"output": "xyz"})


def test_bins_output_to_ab_is_the_annealed_mean():
  logits = np.random.default_rng(0).normal(0, 3, (1, 3, 3, 313)).astype(np.float32)
  expected = scipy.special.softmax(logits / 0.38, axis=-1) @ color.AB_BINS
  np.testing.assert_allclose(heads.output_to_ab(jnp.asarray(logits), BINS), expected,
                             rtol=1e-4, atol=1e-3)


def test_resize_to_matches_torch_bilinear_without_align_corners():
  x = np.random.default_rng(1).normal(size=(2, 4, 5, 3)).astype(np.float32)
  expected = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(8, 10),
                                             mode="bilinear", align_corners=False)
  np.testing.assert_allclose(heads.resize_to(jnp.asarray(x), 8, 10),
                             expected.permute(0, 2, 3, 1).numpy(), atol=1e-5)
  np.testing.assert_array_equal(heads.resize_to(jnp.asarray(x), 4, 5), x)


def test_regression_target_and_output_of_each_kind():
  rng = np.random.default_rng(2)
  rgb = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
  ab = skimage.color.rgb2lab(rgb / 255.0)[..., 1:].astype(np.float32)
  np.testing.assert_allclose(heads.regression_target(RGB, jnp.asarray(rgb), jnp.asarray(ab)),
                             rgb / 127.5 - 1.0, atol=1e-6)
  for cfg in (AB, BINS):
    np.testing.assert_allclose(heads.regression_target(cfg, jnp.asarray(rgb), jnp.asarray(ab)),
                               ab / 110.0, atol=1e-6)
  out = jnp.asarray(rng.uniform(-1, 1, (1, 8, 8, 2)), jnp.float32)
  assert heads.regression_output(out, AB, 8, 8) is out
  # A bins model regresses its decoded ab, upsampled from 1/4 resolution to the target's.
  logits = jnp.asarray(rng.normal(0, 2, (1, 2, 2, 313)), jnp.float32)
  decoded = scipy.special.softmax(np.asarray(logits) / 0.38, axis=-1) @ color.AB_BINS
  expected = torch.nn.functional.interpolate(
      torch.from_numpy(decoded.astype(np.float32)).permute(0, 3, 1, 2), size=(8, 8),
      mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy() / 110.0
  np.testing.assert_allclose(heads.regression_output(logits, BINS, 8, 8), expected, atol=1e-4)
  np.testing.assert_allclose(heads.fake_ab_norm(logits, BINS, 8, 8), expected, atol=1e-4)


def test_fake_ab_norm_of_an_rgb_output_is_its_chroma():
  rgb = np.random.default_rng(3).uniform(0.05, 0.95, (1, 4, 4, 3))
  expected = skimage.color.rgb2lab(rgb)[..., 1:] / 110.0
  np.testing.assert_allclose(heads.fake_ab_norm(jnp.asarray(rgb * 2 - 1, jnp.float32), RGB, 4, 4),
                             expected, atol=2e-3)


def test_predicted_rgb_joins_the_input_l_with_the_predicted_ab():
  rng = np.random.default_rng(4)
  l = rng.uniform(20, 80, (1, 4, 4, 1))
  ab_norm = rng.uniform(-0.2, 0.2, (1, 4, 4, 2))
  l_norm = jnp.asarray(l / 50.0 - 1.0, jnp.float32)  # pix2pix's convention
  expected = skimage.color.lab2rgb(np.concatenate([l, ab_norm * 110.0], axis=-1)[0])[None]
  np.testing.assert_allclose(heads.predicted_rgb(jnp.asarray(ab_norm, jnp.float32), AB, l_norm),
                             expected, atol=2e-3)
  tanh_rgb = jnp.asarray(rng.uniform(-1, 1, (1, 4, 4, 3)), jnp.float32)
  np.testing.assert_allclose(heads.predicted_rgb(tanh_rgb, RGB, l_norm), (tanh_rgb + 1) / 2,
                             atol=1e-7)
