"""Tests of the GAN, perceptual-loss and semantic-conditioning parts of training.

The GAN step (D then G in one jitted step) gives the same losses on 1 and 8 devices; the
two-stage schedule leaves D untouched during pretraining; D's loss is halved (closed form on a
fixed D); the perceptual loss equals a torch VGG19 computation; a frozen semantic backbone stays
as loaded and a trainable one moves; and eval / colorize / load_model work on a GAN workdir.

To keep compilation down, the GAN tests share one tiny pix2pix config: its 8-device steps and
its initial state are the ones train_and_evaluate compiles, so that run hits the compile cache.
"""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from PIL import Image

from backbones_test import TorchResNet18, TorchVGG, randomize_batch_norms
from colorjax import checkpoint, cli, config as config_lib, losses, perceptual, sharding, train
from colorjax import torch_weights
from colorjax.inference import Colorizer
from colorjax.models import backbones, semantic


def _fixed_batch(photos_dir, n=8, size=32):
  paths = sorted(photos_dir.glob("*.jpg"))[:n]
  return {"rgb": np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size),
                                                                          Image.BICUBIC))
                           for p in paths])}


def _gan_config():
  c = config_lib.load_config("pix2pix:tiny")
  # Shallower than the tiny recipe (which recipes_test.py trains), to compile faster.
  c.model.num_downs = 3
  c.disc.n_layers = 1
  # A small learning rate keeps Adam's sign-like first updates of near-zero gradients (whose
  # sign float rounding may flip) from growing into large differences between device counts.
  c.optimizer.lr = c.optimizer.disc_lr = 1e-5
  c.train.update(steps=3, pretrain_steps=2, checkpoint_every=1, keep_checkpoints=3,
                 eval_every=1000, samples=1)
  c.data.eval_images = 4
  return c


@pytest.fixture(scope="module")
def gan():
  """The tiny pix2pix setup, its initial state on 8 devices and lazily compiled steps."""
  c = _gan_config()
  setup = train.create_setup(c, None)
  mesh8 = sharding.create_mesh(8)
  host_state = jax.device_get(train.create_state(setup, c, mesh8)[0])
  steps = {}

  def step_and_state(num_devices):
    if num_devices not in steps:
      mesh = mesh8 if num_devices == 8 else sharding.create_mesh(num_devices)
      shardings = jax.tree.map(lambda _: sharding.replicated(mesh), host_state)
      steps[num_devices] = (train.make_train_step(setup, shardings, mesh, adversarial=True),
                            mesh, shardings)
    step, mesh, shardings = steps[num_devices]
    return step, mesh, jax.device_put(host_state, shardings)

  return c, setup, step_and_state


def _run(step, mesh, state, batch, n):
  metrics = []
  for _ in range(n):
    state, m = step(state, sharding.shard_batch(batch, mesh))
    metrics.append({k: float(v) for k, v in m.items()})
  return jax.device_get(state), metrics


def test_gan_step_one_and_eight_devices_agree(gan, photos_dir):
  c, _, step_and_state = gan
  batch = _fixed_batch(photos_dir)
  state1, metrics1 = _run(*step_and_state(1), batch, 3)
  state8, metrics8 = _run(*step_and_state(8), batch, 3)
  for key in ("train/loss", "train/d_loss", "train/g_gan_loss", "train/g_l1_loss",
              "train/grad_norm", "train/d_grad_norm"):
    np.testing.assert_allclose([m[key] for m in metrics1], [m[key] for m in metrics8],
                               rtol=1e-4, err_msg=key)
  # Adam moves each parameter by about lr * sign(gradient) per step; where a gradient is ~0 float
  # rounding in differently ordered reductions may flip that sign (see train_test.py).
  for part, lr in (("gen", c.optimizer.lr), ("disc", c.optimizer.disc_lr)):
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(
        jax.tree.leaves(state1[part]["params"]), jax.tree.leaves(state8[part]["params"]))])
    assert diff.max() <= 2 * 3 * lr, (part, diff.max())
    assert np.mean(diff > 1e-7) < 0.02, (part, np.mean(diff > 1e-7))
    for a, b in zip(jax.tree.leaves(state1[part]["batch_stats"]),
                    jax.tree.leaves(state8[part]["batch_stats"])):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_discriminator_loss_is_halved_and_generator_loss_is_gan_plus_lambda_l1(gan, photos_dir):
  c, _, step_and_state = gan
  step, mesh, state = step_and_state(1)
  # A D whose last conv has a zero kernel outputs its bias everywhere, whatever it sees.
  bias = 0.3
  state = jax.device_get(state)
  last = f"conv_{c.disc.n_layers + 1}"
  state["disc"]["params"][last]["kernel"] = np.zeros_like(state["disc"]["params"][last]["kernel"])
  state["disc"]["params"][last]["bias"] = np.full_like(state["disc"]["params"][last]["bias"], bias)
  _, (m,) = _run(step, mesh, jax.device_put(state, sharding.replicated(mesh)),
                 _fixed_batch(photos_dir), 1)
  softplus = lambda x: np.log1p(np.exp(x))
  # float32 means over ~1.6k patches carry ~1e-5 of rounding; not halving would be off by 2x.
  assert m["train/d_loss"] == pytest.approx(0.5 * (softplus(-bias) + softplus(bias)), rel=1e-4)
  # Logged beside it: BCE(real, 1) and BCE(fake, 0), whose half sum it is.
  assert m["train/d_loss_real"] == pytest.approx(softplus(-bias), rel=1e-4)
  assert m["train/d_loss_fake"] == pytest.approx(softplus(bias), rel=1e-4)
  assert m["train/d_loss"] == pytest.approx(
      0.5 * (m["train/d_loss_real"] + m["train/d_loss_fake"]), rel=1e-6)
  assert m["train/loss"] == pytest.approx(
      c.loss.gan_weight * m["train/g_gan_loss"] + c.loss.l1_weight * m["train/g_l1_loss"],
      rel=1e-5)


@pytest.mark.parametrize("kind, closed_form", [
    ("vanilla", lambda r, f: 0.5 * (np.log1p(np.exp(-r)) + np.log1p(np.exp(f)))),
    ("lsgan", lambda r, f: 0.5 * ((r - 1.0) ** 2 + f ** 2)),
    ("hinge", lambda r, f: 0.5 * (max(0.0, 1.0 - r) + max(0.0, 1.0 + f))),
])
def test_discriminator_loss_closed_forms(kind, closed_form):
  real, fake = 0.7, -0.2
  got = losses.discriminator_loss(jnp.full((2, 3, 3, 1), real), jnp.full((2, 3, 3, 1), fake), kind)
  assert float(got) == pytest.approx(closed_form(real, fake), rel=1e-6)
  # The real term alone is the loss with a fake term of 0, and vice versa: the closed form's
  # halves (vanilla's fake term tends to 0 as fake -> -inf, lsgan's at 0, hinge's at <= -1).
  real_term, fake_term = losses.discriminator_loss_terms(
      jnp.full((2, 3, 3, 1), real), jnp.full((2, 3, 3, 1), fake), kind)
  no_fake = {"vanilla": -1e4, "lsgan": 0.0, "hinge": -2.0}[kind]
  no_real = {"vanilla": 1e4, "lsgan": 1.0, "hinge": 2.0}[kind]
  assert float(real_term) == pytest.approx(2 * closed_form(real, no_fake), rel=1e-6)
  assert float(fake_term) == pytest.approx(2 * closed_form(no_real, fake), rel=1e-6)


def _restore_state(workdir, setup, config, step):
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.eval_shape(functools.partial(train.init_state, setup, config.seed,
                                              config.data.crop_size, False))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          abstract)
  manager = checkpoint.create_manager(workdir)
  try:
    state, _ = checkpoint.restore(manager, abstract, step=step)
  finally:
    manager.close()
  return jax.device_get(state)


def _adam_counts(opt_state) -> set[int]:
  leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
  return {int(v) for path, v in leaves if "count" in jax.tree_util.keystr(path)}


def test_two_stage_keeps_d_fixed_while_pretraining_then_eval_and_colorize(gan, photos_dir,
                                                                         tmp_path):
  c, setup, _ = gan
  workdir = tmp_path / "wd"
  train.train_and_evaluate(c, str(workdir))
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "train/d_loss" in r] == [3]
  assert any("eval/model/psnr" in r for r in rows)  # the Evaluator ran on the generator

  states = {s: _restore_state(workdir, setup, c, s) for s in (1, 2, 3)}
  d_leaves = {s: jax.tree.leaves(states[s]["disc"]["params"]) for s in states}
  assert _adam_counts(states[1]["disc"]["opt_state"]) == {0}
  assert _adam_counts(states[2]["disc"]["opt_state"]) == {0}
  assert all(np.array_equal(a, b) for a, b in zip(d_leaves[1], d_leaves[2]))
  assert _adam_counts(states[3]["disc"]["opt_state"]) == {1}
  assert any(not np.array_equal(a, b) for a, b in zip(d_leaves[2], d_leaves[3]))
  assert _adam_counts(states[3]["gen"]["opt_state"]) == {3}

  # load_model gives the generator of the last checkpoint, which eval and colorize use.
  _, variables = checkpoint.load_model(workdir)
  for a, b in zip(jax.tree.leaves(variables["params"]),
                  jax.tree.leaves(states[3]["gen"]["params"])):
    np.testing.assert_array_equal(a, b)
  folder = tmp_path / "photos"
  folder.mkdir()
  for path in sorted(photos_dir.glob("*.jpg"))[:2]:
    Image.open(path).convert("RGB").resize((48, 40)).save(folder / (path.stem + ".png"))
  out = tmp_path / "m.json"
  assert cli.main(["eval", "--checkpoint", str(workdir), "--data", str(folder), "--out",
                   str(out), "--size", "32"]) == 0
  result = json.loads(out.read_text())
  assert result["images"] == 2 and np.isfinite(result["model"]["psnr"])
  colorized = tmp_path / "colorized"
  assert cli.main(["colorize", str(folder), "--checkpoint", str(workdir), "--output",
                   str(colorized), "--quiet"]) == 0
  written = sorted(colorized.rglob("*.png"))
  assert len(written) == 2 and Image.open(written[0]).size == (48, 40)


def test_generator_starts_from_the_official_eccv16_weights_file(tmp_path):
  from eccv16_test import _release_module  # pylint: disable=g-import-not-at-top
  from colorjax import color  # pylint: disable=g-import-not-at-top
  from colorjax.models import eccv16  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config("seed000_eccv16_gan:tiny")
  # Only the generator matters here: keep the state small (no D, no VGG19).
  c.disc.enabled = False
  c.loss.update(kind="soft_ce", perceptual_weight=0.0)
  torch.manual_seed(0)
  release = _release_module(c.model.width)
  with torch.no_grad():
    release.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  path = tmp_path / "release.pth"
  torch.save(release.state_dict(), path)
  c.model.init_from = str(path)
  setup = train.create_setup(c, None)
  state, _ = train.create_state(setup, c, sharding.create_mesh(1))
  want = eccv16.load_torch_eccv16(path, width=c.model.width)
  got = jax.device_get(state["gen"])
  for col in ("params", "batch_stats"):
    assert jax.tree.structure(got[col]) == jax.tree.structure(want[col])
    for a, b in zip(jax.tree.leaves(got[col]), jax.tree.leaves(want[col])):
      np.testing.assert_array_equal(a, b)

  c.model.width = 1 / 8  # the file no longer fits the model
  with pytest.raises(torch_weights.WeightFileError, match="release.pth"):
    train.create_setup(c, None)


# ------------------------------------------------------------------------------------------------
# Perceptual loss
# ------------------------------------------------------------------------------------------------


def _torch_vgg(stage_convs, seed):
  torch.manual_seed(seed)
  return TorchVGG(stage_convs, hidden=8, num_classes=10).eval()


def test_perceptual_loss_equals_a_torch_vgg19_computation(tmp_path):
  model = _torch_vgg(backbones.VGG19_STAGE_CONVS, seed=0)
  path = tmp_path / "vgg19.pth"
  torch.save(model.state_dict(), path)
  layers = ("relu1_2", "relu2_2")
  network = perceptual.create_network(layers)
  variables = perceptual.load_variables(path, layers)
  rng = np.random.default_rng(0)
  pred = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  true = rng.uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
  got = perceptual.perceptual_loss(network, variables, jnp.asarray(pred), jnp.asarray(true),
                                   layers)

  mean, std = np.array(backbones.IMAGENET_MEAN), np.array(backbones.IMAGENET_STD)
  to_torch = lambda x: torch.from_numpy(((x - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))
  with torch.no_grad():
    _, acts_pred, _ = model(to_torch(pred))
    _, acts_true, _ = model(to_torch(true))
  want = np.mean([float((acts_pred[n] - acts_true[n]).abs().mean()) for n in layers])
  assert float(got) == pytest.approx(want, rel=1e-4)
  # Only the layers' stages are built: 2 stages of VGG19, 4 convs.
  assert sorted(variables["params"]) == ["features_0", "features_2", "features_5", "features_7"]


def test_perceptual_weights_must_be_a_vgg19_file(tmp_path):
  path = tmp_path / "vgg16.pth"
  torch.save(_torch_vgg(backbones.VGG16_STAGE_CONVS, seed=1).state_dict(), path)
  # Its first two stages have VGG19's shapes, but the file is not a VGG19.
  with pytest.raises(torch_weights.WeightFileError, match="vgg16.pth"):
    perceptual.load_variables(path, ("relu1_2",))


def test_missing_perceptual_weights_name_the_key():
  c = config_lib.load_config("seed000_eccv16_gan:tiny")
  c.loss.perceptual_weights = ""
  with pytest.raises(ValueError, match="loss.perceptual_weights"):
    train.create_setup(c, None)


# ------------------------------------------------------------------------------------------------
# Semantic conditioning
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
  torch.manual_seed(0)
  model = TorchResNet18()
  randomize_batch_norms(model)
  path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
  torch.save(model.state_dict(), path)
  return path


def _semantic_step(c, photos_dir):
  """Creates the state of `c` on one device and runs one step: (state before, state after)."""
  mesh = sharding.create_mesh(1)
  setup = train.create_setup(c, None)
  state, shardings = train.create_state(setup, c, mesh)
  before = jax.device_get(state)
  step = train.make_train_step(setup, shardings, mesh, adversarial=False)
  after, _ = _run(step, mesh, state, _fixed_batch(photos_dir), 1)
  return before, after, shardings


def _moved(before, after, part):
  return [not np.array_equal(a, b)
          for a, b in zip(jax.tree.leaves(before["gen"]["params"][part]),
                          jax.tree.leaves(after["gen"]["params"][part]))]


def test_frozen_semantic_backbone_keeps_its_loaded_weights(resnet18_file, photos_dir, tmp_path):
  path = resnet18_file
  c = config_lib.load_config("seed001_encoder_decoder:tiny")
  c.model.update(semantic_backbone="resnet18", semantic_width=1.0, semantic_weights=str(path),
                 semantic_trainable=False)
  # With weight decay, only leaving the backbone out of the optimizer keeps it unchanged.
  c.optimizer.weight_decay = 1e-2
  config_lib.validate(c)
  before, after, shardings = _semantic_step(c, photos_dir)
  loaded = backbones.backbone_variables_from_file("resnet18", path)
  for col in ("params", "batch_stats"):
    for a, b in zip(jax.tree.leaves(before["gen"][col][semantic.BACKBONE_NAME]),
                    jax.tree.leaves(loaded[col])):
      np.testing.assert_array_equal(a, b)
  assert all(_moved(before, after, "generator"))
  assert not any(_moved(before, after, semantic.BACKBONE_NAME))

  # The wrapper's variables (generator + backbone) are what load_model and Colorizer use.
  workdir = tmp_path / "wd"
  checkpoint.write_config(workdir, c.to_dict())
  manager = checkpoint.create_manager(workdir)
  checkpoint.save(manager, 1, jax.device_put(after, shardings))
  manager.wait_until_finished()
  manager.close()
  _, variables = checkpoint.load_model(workdir)
  assert set(variables["params"]) == {"generator", semantic.BACKBONE_NAME}
  for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(
      {"batch_stats": after["gen"]["batch_stats"], "params": after["gen"]["params"]})):
    np.testing.assert_array_equal(a, b)
  ab = Colorizer.from_checkpoint(workdir)(np.full((1, 32, 32, 1), 60.0, np.float32))
  assert ab.shape == (1, 32, 32, 2) and np.isfinite(ab).all()


def test_trainable_semantic_backbone_is_trained(photos_dir):
  c = config_lib.load_config("seed001_encoder_decoder:tiny")
  c.model.semantic_trainable = True
  before, after, _ = _semantic_step(c, photos_dir)
  assert all(_moved(before, after, "generator"))
  assert all(_moved(before, after, semantic.BACKBONE_NAME))


def test_semantic_generator_sees_the_backbone_embedding_of_the_gray_input():
  from colorjax import models  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config("seed001_encoder_decoder:tiny")
  generator = models.create_generator(c.model, 32)
  backbone = semantic.create_semantic_backbone("vgg16", c.model.semantic_width)
  l_norm = jnp.linspace(-1, 1, 2 * 32 * 32).reshape(2, 32, 32, 1)
  # The 'rbg' PRNG's initialisers compile several times faster on CPU than threefry's.
  key = jax.random.key(0, impl="rbg")
  embedding_size = semantic.embedding_size("vgg16", c.model.semantic_width)
  unet_variables = jax.jit(lambda: generator.generator.init(
      key, l_norm, train=False, semantic_BC=jnp.zeros((2, embedding_size))))()
  backbone_variables = jax.jit(lambda: backbone.init(
      jax.random.fold_in(key, 1), jnp.zeros((2, 32, 32, 3)), method="features"))()
  # The wrapper's variables are the two, side by side under these names.
  variables = {"params": {"generator": unet_variables["params"],
                          semantic.BACKBONE_NAME: backbone_variables["params"]},
               "batch_stats": {"generator": unet_variables["batch_stats"]}}

  @jax.jit
  def outputs(l_norm):
    gray = backbones.gray_rgb_from_l(l_norm * 50.0 + 50.0)  # pix2pix convention
    embedding, _ = backbone.apply(backbone_variables, gray, method="features")
    direct = lambda e: generator.generator.apply(unet_variables, l_norm, train=False,
                                                 semantic_BC=e)
    return generator.apply(variables, l_norm, train=False), direct(embedding), \
        direct(embedding + 1.0)

  wrapped, direct, other = outputs(l_norm)
  np.testing.assert_allclose(wrapped, direct, rtol=1e-5, atol=1e-6)
  # The embedding matters: another one gives another output.
  assert np.abs(np.asarray(other) - np.asarray(wrapped)).max() > 1e-6


@pytest.mark.parametrize("recipe, overrides, key", [
    ("seed002_unet_gan:tiny", {"disc.semantic": "true"}, "disc.semantic"),
    ("seed002_attention_semantic:tiny", {"model.semantic_weights": "/x.pth"},
     "model.semantic_width"),
    ("seed000_eccv16_gan:tiny", {"model.semantic_backbone": "resnet18"},
     "model.semantic_backbone"),
    ("seed000_eccv16_gan:tiny", {"loss.perceptual_layers": "('relu6_1',)"},
     "loss.perceptual_layers"),
    ("seed000_eccv16_gan:tiny", {"disc.enabled": "false"}, "loss.kind"),
])
def test_invalid_gan_and_semantic_configs_name_their_keys(recipe, overrides, key):
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    config_lib.apply_overrides(config_lib.load_config(recipe), overrides)
