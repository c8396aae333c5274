"""Tests of colorjax.inference: the Colorizer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from colorjax import color, compilation_cache, config as config_lib, inference, models


def _tiny_generator(recipe: str):
  """The config dict, generator and initial variables of `recipe` (a tiny variant) at 32 px."""
  config = config_lib.load_config(recipe).to_dict()
  generator = models.create_generator(config["model"], 32)
  variables = jax.jit(lambda k: generator.init(k, jnp.zeros((1, 32, 32, 1)), train=False))(
      jax.random.key(0, impl="rbg"))
  return config, generator, variables


def test_colorizer_predicts_quarter_resolution_ab_and_checks_temperature():
  config, _, variables = _tiny_generator("eccv16:tiny")
  colorizer = inference.Colorizer(config, variables)
  ab = colorizer(np.full((2, 32, 32, 1), 50.0, np.float32))
  assert ab.shape == (2, 8, 8, 2) and np.isfinite(ab).all()
  assert colorizer.size == 32 and colorizer.output == "ab"
  with pytest.raises(ValueError, match="'bins', not RGB"):
    colorizer.predict_rgb(np.zeros((1, 32, 32, 1), np.float32))
  with pytest.raises(ValueError, match="temperature"):
    inference.Colorizer(config, variables, temperature=0.0)


def test_rgb_model_colorizer_predicts_its_rgb():
  config, generator, variables = _tiny_generator("seed003_unet_rgb:tiny")
  colorizer = inference.Colorizer(config, variables)
  assert colorizer.output == "rgb"
  l = np.random.default_rng(0).uniform(0, 100, (2, 32, 32, 1)).astype(np.float32)
  rgb = colorizer.predict_rgb(l)
  out = jax.jit(lambda v, x: generator.apply(v, x, train=False))(
      variables, jnp.asarray(l / 50.0 - 1.0))  # pix2pix's L normalisation
  assert rgb.shape == (2, 32, 32, 3)
  np.testing.assert_allclose(rgb, (np.asarray(out) + 1.0) / 2.0, atol=1e-5)


def test_colorizer_from_a_stored_program_predicts_what_the_traced_one_does(tmp_path, monkeypatch):
  config, _, variables = _tiny_generator("eccv16:tiny")
  l = np.random.default_rng(1).uniform(0, 100, (2, 32, 32, 1)).astype(np.float32)
  monkeypatch.setattr(compilation_cache, "_exported_dir", None)
  traced = inference.Colorizer(config, variables)
  monkeypatch.setattr(compilation_cache, "_exported_dir", tmp_path)
  stored = inference.Colorizer(config, variables)
  np.testing.assert_allclose(stored(l), traced(l), atol=1e-5)
  np.testing.assert_allclose(stored.raw_output(l), traced.raw_output(l), atol=1e-5)
  again = inference.Colorizer(config, variables)  # loads the two programs written above
  np.testing.assert_array_equal(again(l), stored(l))
  assert len(list(tmp_path.glob("*.jaxexport"))) == 2
