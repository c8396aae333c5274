"""Every recipe in configs/ trains: its `tiny` variant runs through train.train_and_evaluate.

Each run is as small as a real run can be (4 steps of 8 images at 32 px, checkpoints at steps 2
and 4, one evaluation at the end on 4 images). Three representative recipes (the pix2pix GAN, the
ECCV16-as-GAN-generator of seed 000 with its perceptual loss, and seed 002's attention + semantic
U-Net with a semantic PatchGAN) are also interrupted after step 2 and resumed, and must give the
losses of an uninterrupted run. Full-size parameter counts are checked without building weights.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from backbones_test import param_count
from colorjax import checkpoint, config as config_lib, models, train
from colorjax.models import efficientnet, inception

RECIPES = ("pix2pix", "unet_l1", "seed000_eccv16_gan", "seed001_encoder_decoder",
           "seed001_scratch", "seed001_vgg16", "seed001_inception", "seed001_efficientnet",
           "seed002_unet_gan", "seed002_attention_semantic", "seed003_unet_lab",
           "seed003_unet_rgb", "seed003_cnn", "seed004_unet_gan")
RESUMED = ("pix2pix", "seed000_eccv16_gan", "seed002_attention_semantic")


def _tiny(name: str, steps: int = 4):
  c = config_lib.load_config(f"{name}:tiny")
  c.train.steps = steps
  c.train.checkpoint_every = 2
  c.train.eval_every = 1000  # evaluation only at the last step
  c.data.eval_images = 4
  c.train.samples = 1
  return c


def _rows(workdir):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [json.loads(line) for line in lines]


def _train_losses(workdir) -> dict[int, float]:
  return {r["step"]: r["train/loss"] for r in _rows(workdir) if "train/loss" in r}


def _eval_rows(workdir) -> list[dict]:
  return [r for r in _rows(workdir) if "eval/model/psnr" in r]


def _checkpoint_steps(workdir) -> list[int]:
  manager = checkpoint.create_manager(workdir)
  try:
    return sorted(manager.all_steps())
  finally:
    manager.close()


def test_every_recipe_is_covered():
  on_disk = {p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("*.py")}
  # eccv16 is trained, resumed and evaluated by train_test.py.
  assert on_disk - {"eccv16"} == set(RECIPES), (
      "every configs/*.py needs a tiny run here: add it to RECIPES")


@pytest.mark.parametrize("name", [r for r in RECIPES if r not in RESUMED])
def test_tiny_recipe_trains_checkpoints_and_evaluates(name, tmp_path):
  c = _tiny(name)
  final = train.train_and_evaluate(c, str(tmp_path))
  losses = _train_losses(tmp_path)
  assert sorted(losses) == [1, 2, 3, 4]
  assert all(np.isfinite(list(losses.values())))
  assert _checkpoint_steps(tmp_path) == [2, 4]
  (evaluation,) = _eval_rows(tmp_path)
  assert evaluation["step"] == 4 and np.isfinite(evaluation["eval/model/psnr"])
  assert final["eval/model/psnr"] == evaluation["eval/model/psnr"]
  assert "eval/gray/psnr" in evaluation and "eval/model/auc" in evaluation


@pytest.mark.parametrize("name", RESUMED)
def test_tiny_recipe_resumes_with_the_losses_of_an_uninterrupted_run(name, tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  train.train_and_evaluate(_tiny(name), str(straight))
  train.train_and_evaluate(_tiny(name, steps=2), str(resumed))
  assert _checkpoint_steps(resumed) == [2]
  train.train_and_evaluate(_tiny(name), str(resumed))

  want, got = _train_losses(straight), _train_losses(resumed)
  assert sorted(want) == [1, 2, 3, 4] and sorted(got) == [1, 2, 3, 4]
  for step in (3, 4):
    assert got[step] == pytest.approx(want[step], rel=1e-5), (step, got[step], want[step])
  assert _checkpoint_steps(resumed) == [2, 4]
  # The resumed run evaluated where it stopped and at its end, like the straight run at step 4.
  assert [r["step"] for r in _eval_rows(resumed)] == [2, 4]
  assert _eval_rows(resumed)[-1]["eval/model/psnr"] == pytest.approx(
      _eval_rows(straight)[-1]["eval/model/psnr"], rel=1e-4)
  # All three are GANs; two-stage ones log D's loss only after their pretraining steps, which
  # use the regression loss alone; then G's loss is GAN + λ·L1 (+ the perceptual term).
  c = _tiny(name)
  train_rows = {r["step"]: r for r in _rows(resumed) if "train/loss" in r}
  assert [s for s, r in train_rows.items() if "train/d_loss" in r] == \
      [s for s in (1, 2, 3, 4) if s > c.train.pretrain_steps]
  for step, r in train_rows.items():
    if step <= c.train.pretrain_steps:
      assert r["train/loss"] == r["train/rec_loss"] and "train/perceptual_loss" not in r
      continue
    assert r["train/d_loss"] == pytest.approx(
        0.5 * (r["train/d_loss_real"] + r["train/d_loss_fake"]), rel=1e-5)
    want_total = (c.loss.gan_weight * r["train/g_gan_loss"]
                  + c.loss.l1_weight * r["train/g_l1_loss"]
                  + c.loss.perceptual_weight * r.get("train/perceptual_loss", 0.0))
    assert r["train/loss"] == pytest.approx(want_total, rel=1e-5)
    assert ("train/perceptual_loss" in r) == (c.loss.perceptual_weight > 0)


def _param_count(module, x_shape, **kwargs) -> int:
  variables = jax.eval_shape(lambda: module.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, jnp.zeros(x_shape),
      train=False, **kwargs))
  return sum(int(np.prod(v.shape)) for v in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name, generator_params, discriminator_params", [
    ("pix2pix", 54_409_858, 2_765_633),          # unet_256 and the 70x70 PatchGAN (SPEC §2)
    ("seed000_eccv16_gan", 32_236_011, 2_765_633),  # the ECCV16 release (SPEC §2)
    ("seed003_unet_lab", 20_250_122, None),      # report: ~20.5M
    ("seed003_unet_rgb", 4_557_193, None),       # report: ~4.5M
    ("seed003_cnn", 5_510_787, None),            # report: ~4.3M (3x3 convs + pooling)
])
def test_full_size_parameter_counts(name, generator_params, discriminator_params):
  c = config_lib.load_config(name)
  size = c.data.crop_size
  assert _param_count(models.create_generator(c.model, size), (1, size, size, 1)) == \
      generator_params
  if discriminator_params is not None:
    assert _param_count(models.create_discriminator(c.disc, c.model), (1, size, size, 3)) == \
        discriminator_params


def test_semantic_recipes_add_their_backbone_to_the_generator():
  resnet18_without_fc = 11_689_512 - (512 * 1000 + 1000)
  c = config_lib.load_config("seed002_attention_semantic")
  plain = config_lib.load_config("seed002_unet_gan")
  assert c.model.semantic_fusion == "input"  # the report's "concatenated with the grayscale input"
  with_backbone = _param_count(models.create_generator(c.model, 256), (1, 256, 256, 1))
  c.model.semantic_fusion = "bottleneck"
  with_bottleneck_fusion = _param_count(models.create_generator(c.model, 256), (1, 256, 256, 1))
  c.model.semantic_backbone = ""
  without = _param_count(models.create_generator(c.model, 256), (1, 256, 256, 1))
  # Input fusion: layer4's 512 channels widen the first 4x4 conv (64 filters, no bias).
  assert with_backbone - without == resnet18_without_fc + 512 * 4 * 4 * 64
  fusion = 512 * (512 + 512) + 512  # 1x1 conv: bottleneck + embedding -> bottleneck, with bias
  assert with_bottleneck_fusion - without == resnet18_without_fc + fusion
  # The multiscale inputs widen the first two convolutions; attention adds its block at level 3.
  assert without > _param_count(models.create_generator(plain.model, 256), (1, 256, 256, 1))


def _conv(cin, cout, k=3):
  return k * k * cin * cout + cout  # with bias


@pytest.mark.parametrize("name, backbone_params, embedding", [
    ("seed001_inception", 21_785_568, 2048),  # torchvision inception_v3 less aux and fc
    ("seed001_efficientnet", 5_288_548 - 1_281_000, 1280),
])
def test_report001_fusion_models_have_the_reports_layers(name, backbone_params, embedding):
  # Report 001's table (model 4): encoder 64-128-128-256-256-512-512-256, fusion 256 (1x1 conv
  # of the encoder's features and the embedding), decoder 128-64-32-16-2; 3x3 convs with bias.
  encoder = (1, 64, 128, 128, 256, 256, 512, 512, 256)
  decoder = (256, 128, 64, 32, 16, 2)
  network = (sum(_conv(a, b) for a, b in zip(encoder, encoder[1:]))
             + _conv(256 + embedding, 256, k=1)
             + sum(_conv(a, b) for a, b in zip(decoder, decoder[1:])))
  c = config_lib.load_config(name)
  assert c.optimizer.name == "rmsprop" and c.data.crop_size == 256
  assert _param_count(models.create_generator(c.model, 256), (1, 256, 256, 1)) == \
      backbone_params + network
  assert inception.num_params() == 21_785_568
  assert param_count(efficientnet.EfficientNetB0()) == 5_288_548 - 1_281_000


def test_report001_models_1_and_2():
  vgg16_features = 14_714_688  # torchvision vgg16 without its classifier
  decoder = (512, 256, 128, 64, 32, 16, 2)  # on pool5 (512 channels)
  c = config_lib.load_config("seed001_vgg16")
  assert _param_count(models.create_generator(c.model, 224), (1, 224, 224, 1)) == \
      vgg16_features + sum(_conv(a, b) for a, b in zip(decoder, decoder[1:]))
  model1 = config_lib.load_config("seed001_scratch")
  assert model1.model.encoder_dropout == 0.5 and model1.data.crop_size == 512
  # No skips, 4x4 convs: encoder 1-128-256-512-1024 (BatchNorm at the middle two), decoder
  # 1024-512-256-128-3 (BatchNorm but at the output, which has a bias); dropout has no weights.
  widths = (1, 128, 256, 512, 1024)
  convs = sum(16 * a * b for a, b in zip(widths, widths[1:]))
  up_widths = (1024, 512, 256, 128, 3)
  up_convs = sum(16 * a * b for a, b in zip(up_widths, up_widths[1:])) + 3
  norms = 2 * (256 + 512) + 2 * (512 + 256 + 128)
  assert _param_count(models.create_generator(model1.model, 512), (1, 512, 512, 1)) == \
      convs + up_convs + norms
