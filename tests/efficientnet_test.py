"""EfficientNet-B0: the Flax model against a torch model of torchvision's layout, weight import.

torchvision is not a dependency, so the reference is written here in plain torch.nn with
torchvision's module names (`features.S.J.block.K...`, SE `fc1`/`fc2`, `classifier.1`), hence its
state_dict keys; its BatchNorms get random affine parameters and running statistics and the
state_dict goes through a real file.
"""
import functools

import jax
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn as tnn

from backbones_test import (assert_close_relative, nchw_to_nhwc, param_count,
                            randomize_batch_norms, torch_input)
from colorjax import torch_weights
from colorjax.models import efficientnet


def conv_bn_act(cin, cout, kernel, stride=1, groups=1, act=True):
  layers = [tnn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            tnn.BatchNorm2d(cout)]
  return tnn.Sequential(*layers, *([tnn.SiLU()] if act else []))


class TorchSqueezeExcitation(tnn.Module):

  def __init__(self, channels, squeeze):
    super().__init__()
    self.fc1 = tnn.Conv2d(channels, squeeze, 1)
    self.fc2 = tnn.Conv2d(squeeze, channels, 1)

  def forward(self, x):
    scale = torch.sigmoid(self.fc2(tnn.functional.silu(self.fc1(x.mean((2, 3), keepdim=True)))))
    return x * scale


class TorchMBConv(tnn.Module):

  def __init__(self, expand, kernel, stride, cin, cout):
    super().__init__()
    expanded = cin * expand
    layers = [conv_bn_act(cin, expanded, 1)] if expand != 1 else []
    layers += [conv_bn_act(expanded, expanded, kernel, stride, groups=expanded),
               TorchSqueezeExcitation(expanded, max(1, cin // 4)),
               conv_bn_act(expanded, cout, 1, act=False)]
    self.block = tnn.Sequential(*layers)
    self.residual = stride == 1 and cin == cout

  def forward(self, x):
    return x + self.block(x) if self.residual else self.block(x)


class TorchEfficientNetB0(tnn.Module):

  def __init__(self, num_classes=1000):
    super().__init__()
    layers, cin = [conv_bn_act(3, 32, 3, 2)], 32
    for expand, kernel, stride, cout, count in efficientnet.B0_STAGES:
      blocks = []
      for j in range(count):
        blocks.append(TorchMBConv(expand, kernel, stride if j == 0 else 1, cin, cout))
        cin = cout
      layers.append(tnn.Sequential(*blocks))
    layers.append(conv_bn_act(cin, 1280, 1))
    self.features = tnn.Sequential(*layers)
    self.classifier = tnn.Sequential(tnn.Dropout(0.2), tnn.Linear(1280, num_classes))

  def forward(self, x):
    acts = {}
    for i, layer in enumerate(self.features):
      x = layer(x)
      acts[{0: "stem", 8: "head"}.get(i, f"stage{i}")] = x
    embedding = x.mean((2, 3))
    return embedding, acts, self.classifier(embedding)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  torch.manual_seed(0)
  model = TorchEfficientNetB0()
  randomize_batch_norms(model)
  model.eval()
  path = tmp_path_factory.mktemp("effnet") / "efficientnet_b0.pth"
  torch.save(model.state_dict(), path)
  return model, path


def photos(photos_dir, n=2, size=96):
  return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC),
                              np.float32) / 255.0 for p in sorted(photos_dir.glob("*.jpg"))[:n]])


def _layer_table_param_count(width: float = 1.0, include_top: bool = False) -> int:
  """Parameters of `EfficientNetB0(width, include_top)` from its layer table (no weights)."""
  total = 0
  layers = efficientnet._layers(width, include_top, 1000)  # pylint: disable=protected-access
  for _, _, kind, shape in layers:
    n = 1
    for d in shape:
      n *= d
    total += 2 * shape[0] if kind == "bn" else n + (shape[0] if kind != "conv" else 0)
  return total


def test_param_count_is_torchvisions():
  # torchvision's model card: efficientnet_b0 has 5,288,548 parameters (1280 * 1000 + 1000 fc).
  assert _layer_table_param_count(include_top=True) == 5_288_548
  assert param_count(efficientnet.EfficientNetB0(include_top=True)) == 5_288_548
  assert param_count(efficientnet.EfficientNetB0()) == 5_288_548 - 1_281_000 == \
      _layer_table_param_count()
  with torch.device("meta"):
    assert sum(p.numel() for p in TorchEfficientNetB0().parameters()) == 5_288_548


def test_matches_torch_on_bundled_photos(reference, photos_dir):
  model, path = reference
  rgb = photos(photos_dir)
  with torch.no_grad():
    want_embedding, want_acts, want_logits = model(torch_input(rgb))
  variables = efficientnet.load_efficientnet_b0(path, include_top=True)
  out = jax.jit(efficientnet.EfficientNetB0(include_top=True).apply)(variables, rgb)
  assert out.embedding_BC.shape == (2, 1280)
  assert_close_relative(out.embedding_BC, want_embedding)
  assert_close_relative(out.logits_BK, want_logits)
  for name in ("stem", "stage1", "stage3", "stage6", "stage7", "head"):
    assert_close_relative(out.activations[name], nchw_to_nhwc(want_acts[name]))

  headless = efficientnet.load_efficientnet_b0(path)
  embedding, _ = jax.jit(functools.partial(efficientnet.EfficientNetB0().apply,
                                           method="features"))(headless, rgb)
  np.testing.assert_array_equal(embedding, out.embedding_BC)


def test_import_names_bad_keys(reference):
  model, _ = reference
  state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
  del state_dict["features.6.3.block.2.fc1.bias"]
  state_dict["features.2.0.block.1.0.weight"] = np.zeros((96, 1, 5, 5), np.float32)
  state_dict["features.7.1.block.0.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)  # a B1 block
  with pytest.raises(torch_weights.WeightFileError) as error:
    efficientnet.efficientnet_b0_variables_from_torch(state_dict, source="b0.pth")
  message = str(error.value)
  assert "b0.pth" in message and "features.6.3.block.2.fc1.bias" in message
  assert "features.7.1.block.0.0.weight" in message
  assert "features.2.0.block.1.0.weight: expected (96, 1, 3, 3), found (96, 1, 5, 5)" in message
