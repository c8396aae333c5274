"""Tests for the ImageNet backbones and their torchvision-layout weight import.

torchvision is not a dependency, so the reference models are written here in plain torch.nn with
torchvision's module names (hence its state_dict keys).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import torch
from torch import nn as tnn

from colorjax import torch_weights
from colorjax.models import backbones


class TorchBasicBlock(tnn.Module):

  def __init__(self, in_width, width, stride):
    super().__init__()
    self.conv1 = tnn.Conv2d(in_width, width, 3, stride, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(width)
    self.conv2 = tnn.Conv2d(width, width, 3, 1, 1, bias=False)
    self.bn2 = tnn.BatchNorm2d(width)
    self.downsample = None
    if stride != 1 or in_width != width:
      self.downsample = tnn.Sequential(tnn.Conv2d(in_width, width, 1, stride, bias=False),
                                       tnn.BatchNorm2d(width))

  def forward(self, x):
    y = torch.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class TorchResNet18(tnn.Module):

  def __init__(self, widths=(64, 128, 256, 512), num_classes=1000):
    super().__init__()
    self.conv1 = tnn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
    self.bn1 = tnn.BatchNorm2d(widths[0])
    in_width = widths[0]
    for stage, width in enumerate(widths, start=1):
      stride = 1 if stage == 1 else 2
      setattr(self, f"layer{stage}", tnn.Sequential(TorchBasicBlock(in_width, width, stride),
                                                    TorchBasicBlock(width, width, 1)))
      in_width = width
    self.fc = tnn.Linear(widths[-1], num_classes)

  def forward(self, x):
    acts = {"stem": torch.relu(self.bn1(self.conv1(x)))}
    x = tnn.functional.max_pool2d(acts["stem"], 3, 2, 1)
    for stage in range(1, 5):
      x = acts[f"layer{stage}"] = getattr(self, f"layer{stage}")(x)
    embedding = x.mean(dim=(2, 3))
    return embedding, acts, self.fc(embedding)


class TorchVGG(tnn.Module):

  def __init__(self, stage_convs, widths=(64, 128, 256, 512, 512), hidden=4096, num_classes=1000):
    super().__init__()
    layers, in_width, self.relu_names = [], 3, {}
    for stage, (convs, width) in enumerate(zip(stage_convs, widths), start=1):
      for k in range(1, convs + 1):
        layers += [tnn.Conv2d(in_width, width, 3, 1, 1), tnn.ReLU()]
        self.relu_names[len(layers) - 1] = f"relu{stage}_{k}"
        in_width = width
      layers.append(tnn.MaxPool2d(2, 2))
    self.features = tnn.Sequential(*layers)
    self.avgpool = tnn.AdaptiveAvgPool2d((7, 7))
    self.classifier = tnn.Sequential(
        tnn.Linear(in_width * 49, hidden), tnn.ReLU(), tnn.Dropout(),
        tnn.Linear(hidden, hidden), tnn.ReLU(), tnn.Dropout(), tnn.Linear(hidden, num_classes))

  def forward(self, x):
    acts = {}
    for i, layer in enumerate(self.features):
      x = layer(x)
      if i in self.relu_names:
        acts[self.relu_names[i]] = x
    embedding = x.mean(dim=(2, 3))
    return embedding, acts, self.classifier(torch.flatten(self.avgpool(x), 1))


def randomize_batch_norms(model, spread=0.2):
  """Random BatchNorm scales, biases and statistics (around 1, 0, 0 by `spread`; var in [0.5,
  1.5)), so a reference comparison exercises every BatchNorm term."""
  gen = torch.Generator().manual_seed(0)
  for m in model.modules():
    if isinstance(m, tnn.BatchNorm2d):
      n = m.num_features
      m.weight.data = 1 + spread * torch.randn(n, generator=gen)
      m.bias.data = spread * torch.randn(n, generator=gen)
      m.running_mean.data = spread * torch.randn(n, generator=gen)
      m.running_var.data = 0.5 + torch.rand(n, generator=gen)


def numpy_state_dict(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def random_rgb(shape, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


def torch_input(rgb_BHWC):
  mean, std = np.array(backbones.IMAGENET_MEAN), np.array(backbones.IMAGENET_STD)
  return torch.from_numpy(((rgb_BHWC - mean) / std).astype(np.float32).transpose(0, 3, 1, 2))


def assert_close_relative(got, want, rtol=1e-4):
  want = np.asarray(want)
  scale = np.abs(want).max()
  assert scale > 0
  assert np.abs(np.asarray(got) - want).max() <= rtol * scale, (
      np.abs(np.asarray(got) - want).max(), scale)


def nchw_to_nhwc(t):
  return t.detach().numpy().transpose(0, 2, 3, 1)


def param_count(model, size=224):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


def torch_param_count(make):
  with torch.device("meta"):
    module = make()
  return sum(p.numel() for p in module.parameters())


def test_param_counts():
  assert param_count(backbones.ResNet18(include_top=True)) == 11_689_512
  assert param_count(backbones.ResNet18()) == 11_689_512 - 513_000
  assert param_count(backbones.vgg16()) == 14_714_688
  assert param_count(backbones.vgg16(include_top=True)) == 138_357_544
  assert param_count(backbones.vgg19(include_top=True)) == torch_param_count(
      lambda: TorchVGG(backbones.VGG19_STAGE_CONVS))
  assert param_count(backbones.vgg19()) == 20_024_384


def test_resnet18_matches_torch():
  torch.manual_seed(0)
  ref = TorchResNet18()
  randomize_batch_norms(ref)
  ref.eval()
  rgb = random_rgb((2, 32, 32, 3))
  with torch.no_grad():
    want_embedding, want_acts, want_logits = ref(torch_input(rgb))

  model = backbones.ResNet18(include_top=True)
  variables = backbones.resnet18_variables_from_torch(numpy_state_dict(ref), include_top=True)
  out = jax.jit(model.apply)(variables, rgb)
  assert out.embedding_BC.shape == (2, 512)
  assert_close_relative(out.embedding_BC, want_embedding)
  assert_close_relative(out.logits_BK, want_logits)
  for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
    assert_close_relative(out.activations[name], nchw_to_nhwc(want_acts[name]))

  # Without the head, fc.* (and num_batches_tracked) are dropped from the same file.
  headless = backbones.resnet18_variables_from_torch(numpy_state_dict(ref))
  without_fc = {"params": {k: v for k, v in variables["params"].items() if k != "fc"},
                "batch_stats": variables["batch_stats"]}
  assert jax.tree.structure(headless) == jax.tree.structure(without_fc)
  assert all(np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(headless), jax.tree.leaves(without_fc)))


def test_vgg19_perceptual_features_match_torch():
  torch.manual_seed(1)
  # Full-width features; a small classifier, which the features-only import drops anyway.
  ref = TorchVGG(backbones.VGG19_STAGE_CONVS, hidden=8, num_classes=2).eval()
  rgb = random_rgb((1, 32, 32, 3), seed=1)
  with torch.no_grad():
    want_embedding, want_acts, _ = ref(torch_input(rgb))

  variables = backbones.vgg19_variables_from_torch(numpy_state_dict(ref))
  embedding, acts = jax.jit(functools.partial(backbones.vgg19().apply, method="features"))(
      variables, rgb)
  assert set(backbones.VGG19_PERCEPTUAL_LAYERS) <= set(acts)
  assert acts["relu3_4"].shape == (1, 8, 8, 256)
  for name in backbones.VGG19_PERCEPTUAL_LAYERS:
    assert_close_relative(acts[name], nchw_to_nhwc(want_acts[name]))
  assert_close_relative(embedding, want_embedding)


TINY_VGG = dict(widths=(8, 16, 32, 64, 64), classifier_features=32, num_classes=10)


def tiny_vgg16_torch():
  torch.manual_seed(2)
  return TorchVGG(backbones.VGG16_STAGE_CONVS, widths=TINY_VGG["widths"], hidden=32,
                  num_classes=10).eval()


def test_vgg16_with_classifier_matches_torch():
  ref = tiny_vgg16_torch()
  rgb = random_rgb((2, 64, 64, 3), seed=2)  # pool5 is 2x2: the 7x7 adaptive pool has real bins
  with torch.no_grad():
    want_embedding, want_acts, want_logits = ref(torch_input(rgb))
  variables = backbones.vgg16_variables_from_torch(numpy_state_dict(ref), include_top=True,
                                                   **TINY_VGG)
  out = jax.jit(backbones.vgg16(include_top=True, **TINY_VGG).apply)(variables, rgb)
  assert_close_relative(out.logits_BK, want_logits)
  assert_close_relative(out.activations["relu5_3"], nchw_to_nhwc(want_acts["relu5_3"]))
  assert_close_relative(out.embedding_BC, want_embedding)


@pytest.mark.parametrize("size", [(7, 7), (5, 9), (14, 16), (1, 1)])
def test_adaptive_avg_pool_matches_torch(size):
  x = random_rgb((2, *size, 4), seed=3)
  want = tnn.AdaptiveAvgPool2d((7, 7))(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  np.testing.assert_allclose(backbones.adaptive_avg_pool(jnp.asarray(x), 7, 7),
                             nchw_to_nhwc(want), atol=1e-6)


def test_converter_reports_every_bad_key():
  state_dict = numpy_state_dict(TorchResNet18(widths=(8, 8, 8, 8), num_classes=3))
  del state_dict["layer4.1.bn2.running_var"]
  state_dict["layer2.0.conv1.weight"] = np.zeros((8, 8, 5, 5), np.float32)
  state_dict["layer1.2.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)  # a ResNet-34 block
  with pytest.raises(torch_weights.WeightFileError) as error:
    backbones.resnet18_variables_from_torch(state_dict, widths=(8, 8, 8, 8), source="r18.pth")
  message = str(error.value)
  assert "r18.pth" in message
  assert "layer4.1.bn2.running_var" in message
  assert "layer1.2.conv1.weight" in message
  assert "layer2.0.conv1.weight: expected (8, 8, 3, 3), found (8, 8, 5, 5)" in message

  headless = {k: v for k, v in numpy_state_dict(tiny_vgg16_torch()).items()
              if not k.startswith("classifier.")}
  backbones.vgg16_variables_from_torch(headless, **TINY_VGG)
  with pytest.raises(torch_weights.WeightFileError, match="missing keys.*classifier.0.weight"):
    backbones.vgg16_variables_from_torch(headless, include_top=True, **TINY_VGG)

  vgg19_file = numpy_state_dict(TorchVGG(backbones.VGG19_STAGE_CONVS, widths=TINY_VGG["widths"],
                                         hidden=32, num_classes=10))
  with pytest.raises(torch_weights.WeightFileError) as error:
    backbones.vgg16_variables_from_torch(vgg19_file, **TINY_VGG)
  assert "missing keys (6): features.17.weight" in str(error.value)
  assert "features.34.weight" in str(error.value)


def test_variables_from_saved_file(tmp_path):
  ref = TorchVGG(backbones.VGG19_STAGE_CONVS, widths=TINY_VGG["widths"], hidden=32, num_classes=10)
  path = tmp_path / "vgg19.pth"
  torch.save(ref.state_dict(), path)
  from_file = backbones.backbone_variables_from_file("vgg19", path, widths=TINY_VGG["widths"])
  direct = backbones.vgg19_variables_from_torch(numpy_state_dict(ref), widths=TINY_VGG["widths"])
  assert jax.tree.structure(from_file) == jax.tree.structure(direct)
  for a, b in zip(jax.tree.leaves(from_file), jax.tree.leaves(direct)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="unknown backbone 'vgg11'"):
    backbones.backbone_variables_from_file("vgg11", path)


def test_gray_rgb_from_l_matches_skimage():
  l = np.linspace(0, 100, 11, dtype=np.float32).reshape(1, 11, 1, 1)
  got = np.asarray(backbones.gray_rgb_from_l(jnp.asarray(l)))
  lab = np.concatenate([l, np.zeros_like(l), np.zeros_like(l)], axis=-1)
  want = skimage.color.lab2rgb(lab[0].astype(np.float64))[None]
  assert got.shape == (1, 11, 1, 3)
  np.testing.assert_allclose(got, want, atol=1e-4)
  np.testing.assert_allclose(got[..., 0], got[..., 2], atol=1e-3)  # gray: R = G = B
