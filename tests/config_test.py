"""Tests of colorjax.config: every recipe loads and validates; variants and overrides are checked."""
import pathlib

import pytest

from colorjax import config as config_lib

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_and_its_tiny_variant_validate(name):
  config_lib.load_config(name)
  tiny = config_lib.load_config(f"configs/{name}.py:tiny")
  assert tiny.train.steps <= 10 and tiny.data.crop_size <= 64


def test_variants_override_the_default():
  full, tiny = config_lib.load_config("eccv16"), config_lib.load_config("eccv16:tiny")
  assert full.data.crop_size == 176 and full.optimizer.lr == 3e-5
  assert (full.optimizer.b1, full.optimizer.b2, full.optimizer.weight_decay) == (0.9, 0.99, 1e-3)
  assert tiny.data.crop_size == 32
  assert config_lib.load_config("eccv16:tiny,bf16").model.dtype == "bfloat16"
  with pytest.raises(ValueError, match="unknown config variant 'huge'"):
    config_lib.load_config("eccv16:huge")


def test_overrides_are_typed_and_named():
  c = config_lib.load_config("eccv16:tiny")
  config_lib.apply_overrides(c, {"optimizer.lr": "2e-4", "data.flip": "false",
                                 "optimizer.boundaries": "(10, 20)", "data.train": "/x"})
  assert c.optimizer.lr == 2e-4 and c.data.flip is False
  assert c.optimizer.boundaries == (10, 20) and c.data.train == "/x"
  with pytest.raises(ValueError, match="data.flip"):
    config_lib.apply_overrides(c, {"data.flip": "maybe"})
  with pytest.raises(ValueError, match="train.steps"):
    config_lib.apply_overrides(c, {"train.steps": "1.5"})
  with pytest.raises(ValueError, match="model"):
    config_lib.apply_overrides(c, {"model": "1"})
  with pytest.raises(ValueError, match="nothere"):
    config_lib.apply_overrides(c, {"nothere.x": "1"})


def test_invalid_combinations_name_their_keys():
  c = config_lib.load_config("eccv16:tiny")
  with pytest.raises(ValueError, match="data.crop_size"):
    config_lib.apply_overrides(c.copy_and_resolve_references(), {"data.crop_size": "36"})
  with pytest.raises(ValueError, match="loss.kind"):
    config_lib.apply_overrides(c.copy_and_resolve_references(), {"loss.kind": "l1"})
  with pytest.raises(ValueError, match="data.eval_fraction"):
    config_lib.apply_overrides(c.copy_and_resolve_references(), {"data.eval_fraction": "1.5"})


def test_missing_config_file_is_named():
  with pytest.raises(FileNotFoundError, match="nope"):
    config_lib.load_config("configs/nope.py")


@pytest.mark.parametrize("key,text", [("optimizer.lr", "1e999"), ("optimizer.lr", "-1e999"),
                                      ("optimizer.scales", "(0.1, 1e999)")])
def test_non_finite_numbers_are_refused_naming_the_key(key, text):
  c = config_lib.load_config("eccv16:tiny")
  with pytest.raises(ValueError, match=f"config key {key}=.* must be a finite number"):
    config_lib.apply_overrides(c, {key: text})
  c = config_lib.load_config("eccv16:tiny")
  c.loss.soft_sigma = float("nan")  # a config file can hold a NaN (`< 0` lets it through)
  with pytest.raises(ValueError, match="config key loss.soft_sigma=nan must be a finite number"):
    config_lib.validate(c)


def test_optimizer_choice_and_rmsprop_keys_are_validated():
  c = config_lib.load_config("eccv16:tiny")
  config_lib.apply_overrides(c, {"optimizer.name": "rmsprop", "optimizer.rms_decay": "0.95"})
  assert c.optimizer.name == "rmsprop" and c.optimizer.rms_decay == 0.95
  for key, value in (("optimizer.name", "sgd"), ("optimizer.rms_decay", "1.0"),
                     ("optimizer.rms_decay", "-0.1"), ("optimizer.rms_eps", "0")):
    with pytest.raises(ValueError, match=key):
      config_lib.apply_overrides(c.copy_and_resolve_references(), {key: value})


def test_report001_model_keys_are_validated():
  def fails(name, overrides, key):
    c = config_lib.load_config(name)
    with pytest.raises(ValueError, match=key):
      config_lib.apply_overrides(c, overrides)

  fails("seed001_inception", {"model.semantic_backbone": ""}, "model.semantic_backbone")
  fails("seed001_inception", {"model.semantic_input_size": "64"}, "model.semantic_input_size")
  fails("seed001_inception", {"model.semantic_width": "0.5", "model.semantic_weights": "/x.pth"},
        "model.semantic_width")
  fails("seed001_vgg16", {"model.semantic_backbone": "efficientnet_b0"}, "model.semantic_backbone")
  fails("seed001_efficientnet", {"model.semantic_fusion": "input"}, "model.semantic_fusion")
  fails("seed001_efficientnet", {"model.output": "bins", "loss.kind": "soft_ce"}, "model.output")
  fails("seed001_scratch", {"model.encoder_dropout": "1.0"}, "model.encoder_dropout")
  fails("pix2pix", {"model.output": "bins", "loss.kind": "soft_ce"}, "model.output='bins'")
  fails("seed002_attention_semantic", {"model.semantic_fusion": "sideways"},
        "model.semantic_fusion")
  fails("eccv16", {"model.semantic_backbone": "vgg16"}, "model.semantic_backbone")


def test_fid_keys_are_validated():
  def check(overrides):
    return config_lib.apply_overrides(config_lib.load_config("eccv16:tiny"), overrides)

  fid_best = {"train.best_metric": "eval/model/fid", "train.best_mode": "min"}
  c = check({"eval.fid_weights": "inception.pth", **fid_best})
  assert c.train.best_metric == "eval/model/fid"
  assert config_lib.with_absolute_paths(c).eval.fid_weights == str(
      pathlib.Path.cwd() / "inception.pth")
  with pytest.raises(ValueError, match="train.best_metric='eval/model/fid' needs eval.fid_weights"):
    check(fid_best)
  with pytest.raises(ValueError, match="train.best_mode='max' must be 'min'.*lower FID"):
    check({"eval.fid_weights": "inception.pth", "train.best_metric": "eval/gray/fid"})
  with pytest.raises(ValueError, match="data.eval_images=1: eval.fid_weights needs at least 2"):
    check({"eval.fid_weights": "inception.pth", "data.eval_images": "1"})
  with pytest.raises(ValueError, match="eval.fid_batch_size"):
    check({"eval.fid_batch_size": "0"})
