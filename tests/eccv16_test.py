"""Tests of the ECCV16 network: shapes, parameter count, and equality with the PyTorch release."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import color as skcolor

from colorjax import color
from colorjax.models import eccv16
from colorjax.torch_weights import WeightFileError

TINY = 1 / 16


def _param_count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@functools.partial(jax.jit, static_argnames=("model", "train"))
def _apply(model, variables, l_norm_BHW1, train=False):
  """model.apply, jitted (one compile is cheaper than op-by-op dispatch of the whole net)."""
  if train:
    return model.apply(variables, l_norm_BHW1, train=True, mutable=["batch_stats"])
  return model.apply(variables, l_norm_BHW1, train=False)


def _abstract_variables(model, size=32):
  init = functools.partial(model.init, train=False)
  return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, size, size, 1)))


def test_full_width_parameter_count_and_state():
  variables = _abstract_variables(eccv16.create_eccv16())
  params, batch_stats = variables["params"], variables["batch_stats"]
  assert _param_count(params) == 32_236_011
  assert _param_count(params) - _param_count(params["model_out"]) == 32_235_385
  assert params["model_out"]["kernel"].shape == (1, 1, color.Q, 2)
  assert "bias" not in params["model_out"]
  assert params["conv8_1"]["kernel"].shape == (4, 4, 256, 512)
  assert params["conv8_313"]["bias"].shape == (color.Q,)
  assert sorted(batch_stats) == [f"bn{i}" for i in range(1, 8)]
  widths = [64, 128, 256, 512, 512, 512, 512]
  for i, width in enumerate(widths, start=1):
    assert batch_stats[f"bn{i}"]["mean"].shape == (width,)
    assert batch_stats[f"bn{i}"]["var"].shape == (width,)


@pytest.fixture(scope="module")
def tiny():
  """A tiny ECCV16, its initialised variables, an input and its eval-mode logits."""
  model = eccv16.create_eccv16(width=TINY)
  l_norm = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1), minval=-0.5, maxval=0.5)
  # rbg keys compile far faster than threefry for the many random kernel initialisers.
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(jax.random.key(0, impl="unsafe_rbg"), l_norm)
  logits = _apply(model, variables, l_norm)
  return model, variables, l_norm, logits


def test_tiny_model_init(tiny):
  _, variables, _, _ = tiny
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
  assert variables["params"]["conv1_1"]["kernel"].shape == (3, 3, 1, 4)
  assert variables["params"]["conv8_1"]["kernel"].shape == (4, 4, 16, 32)
  np.testing.assert_array_equal(variables["params"]["model_out"]["kernel"][0, 0] * 110.0,
                                color.AB_BINS)
  np.testing.assert_array_equal(variables["batch_stats"]["bn3"]["var"], np.ones(16))


def test_tiny_model_shapes_and_modes(tiny):
  model, variables, l_norm, logits = tiny
  assert logits.shape == (2, 8, 8, color.Q) and logits.dtype == jnp.float32
  bigger = _apply(model, variables, jnp.zeros((1, 64, 64, 1)))
  assert bigger.shape == (1, 16, 16, color.Q)

  logits_train, updates = _apply(model, variables, l_norm, train=True)
  assert logits_train.shape == logits.shape
  assert not np.allclose(updates["batch_stats"]["bn1"]["mean"],
                         variables["batch_stats"]["bn1"]["mean"])

  with pytest.raises(ValueError, match=r"\(B, H, W, 1\)"):
    model.apply(variables, jnp.zeros((1, 32, 32, 3)), train=False)


def test_bfloat16_compute_keeps_float32_logits(tiny):
  _, variables, l_norm, reference = tiny
  model = eccv16.create_eccv16(width=TINY, dtype=jnp.bfloat16)
  logits = _apply(model, variables, l_norm)
  assert logits.dtype == jnp.float32 and logits.shape == reference.shape
  assert 0 < np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()


# ------------------------------------------------------------------------------------------------
# Equality with the PyTorch release
# ------------------------------------------------------------------------------------------------


def _release_module(width):
  """The release's generator (richzhang/colorization, eccv16), written out in torch."""
  torch = pytest.importorskip("torch")
  nn = torch.nn
  c = lambda n: max(1, int(round(n * width)))

  def block(in_ch, out_ch, n_convs, last_stride=1, dilation=1):
    layers = []
    for i in range(n_convs):
      stride = last_stride if i == n_convs - 1 else 1
      layers += [nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, stride=stride,
                           padding=dilation, dilation=dilation, bias=True), nn.ReLU(True)]
    return nn.Sequential(*layers, nn.BatchNorm2d(out_ch))

  class ReleaseECCV16(nn.Module):

    def __init__(self):
      super().__init__()
      self.model1 = block(1, c(64), 2, last_stride=2)
      self.model2 = block(c(64), c(128), 2, last_stride=2)
      self.model3 = block(c(128), c(256), 3, last_stride=2)
      self.model4 = block(c(256), c(512), 3)
      self.model5 = block(c(512), c(512), 3, dilation=2)
      self.model6 = block(c(512), c(512), 3, dilation=2)
      self.model7 = block(c(512), c(512), 3)
      self.model8 = nn.Sequential(
          nn.ConvTranspose2d(c(512), c(256), 4, stride=2, padding=1, bias=True), nn.ReLU(True),
          nn.Conv2d(c(256), c(256), 3, padding=1, bias=True), nn.ReLU(True),
          nn.Conv2d(c(256), c(256), 3, padding=1, bias=True), nn.ReLU(True),
          nn.Conv2d(c(256), 313, 1, bias=True))
      self.model_out = nn.Conv2d(313, 2, 1, bias=False)

    def forward(self, l_norm_B1HW):
      x = l_norm_B1HW
      for i in range(1, 9):
        x = getattr(self, f"model{i}")(x)
      return x

  return ReleaseECCV16()


def _photos_l(photos_dir, count=4, size=64):
  """(count, size, size) float32 L of real photos, via skimage's rgb2lab."""
  paths = sorted(photos_dir.glob("*.jpg"))[::7][:count]
  rgbs = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR))
          for p in paths]
  return np.stack([skcolor.rgb2lab(rgb)[..., 0] for rgb in rgbs]).astype(np.float32)


def _randomised_release(width, l_norm_B1HW, seed=0):
  """A release module with random weights and random BatchNorm statistics near the real ones."""
  torch = pytest.importorskip("torch")
  torch.manual_seed(seed)
  module = _release_module(width)
  with torch.no_grad():
    for layer in module.modules():
      if isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
        torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        if layer.bias is not None:
          layer.bias.normal_(0.0, 0.1)
      elif isinstance(layer, torch.nn.BatchNorm2d):
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.normal_(0.0, 0.2)
        layer.momentum = 1.0  # the next training pass stores the batch statistics
    module.train()
    module(l_norm_B1HW)
    for layer in module.modules():
      if isinstance(layer, torch.nn.BatchNorm2d):
        std = layer.running_var.sqrt()
        layer.running_mean.add_(0.3 * std * torch.randn_like(std))
        layer.running_var.mul_(torch.empty_like(std).uniform_(0.6, 1.6))
        layer.momentum = 0.1
    module.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  return module.eval()


def _relative_error(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.abs(got - want).max() / np.abs(want).max()


def test_imported_weights_match_torch_on_photos(tmp_path, photos_dir):
  torch = pytest.importorskip("torch")
  width = 1 / 8
  l_norm_BHW1 = (_photos_l(photos_dir)[..., None] - 50.0) / 100.0
  l_norm_B1HW = torch.from_numpy(l_norm_BHW1.transpose(0, 3, 1, 2).copy())
  release = _randomised_release(width, l_norm_B1HW)
  path = tmp_path / "eccv16_release.pth"
  torch.save(release.state_dict(), path)

  variables = eccv16.load_torch_eccv16(path, width=width)
  model = eccv16.create_eccv16(width=width)

  with torch.no_grad():
    want_logits = release(l_norm_B1HW)
    want_ab = release.model_out(torch.softmax(want_logits, dim=1)) * 110.0
  got_logits = _apply(model, variables, jnp.asarray(l_norm_BHW1))
  assert got_logits.shape == (4, 16, 16, 313)
  assert _relative_error(got_logits, want_logits.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  got_ab = color.decode_annealed_mean(got_logits, temperature=1.0)
  assert _relative_error(got_ab, want_ab.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  # The comparison means something only if the photos give distinct colors.
  assert np.ptp(want_ab.numpy()) > 1.0

  # Training mode: batch statistics, and the running-mean update with torch's momentum.
  release.train()
  with torch.no_grad():
    want_train = release(l_norm_B1HW)
  got_train, updates = _apply(model, variables, jnp.asarray(l_norm_BHW1), train=True)
  assert _relative_error(got_train, want_train.numpy().transpose(0, 2, 3, 1)) <= 1e-4
  for i in range(1, 8):
    bn = getattr(release, f"model{i}")[-1]
    np.testing.assert_allclose(updates["batch_stats"][f"bn{i}"]["mean"],
                               bn.running_mean.numpy(), rtol=1e-4, atol=1e-5)


def test_full_width_state_dict_matches_model_layout(tmp_path):
  torch = pytest.importorskip("torch")
  release = _release_module(1.0)
  with torch.no_grad():
    release.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  path = tmp_path / "full.pth"
  torch.save(release.state_dict(), path)
  del release

  variables = eccv16.load_torch_eccv16(path)
  expected = _abstract_variables(eccv16.create_eccv16())
  shapes = lambda tree: jax.tree.map(lambda x: tuple(x.shape), tree)
  assert shapes(variables) == shapes(dict(expected))
  assert _param_count(variables["params"]) == 32_236_011


def _tiny_state_dict():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  release = _release_module(TINY)
  with torch.no_grad():
    release.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  return {k: v.numpy() for k, v in release.state_dict().items()}


def test_import_refuses_wrong_keys_and_shapes():
  state_dict = _tiny_state_dict()
  variables = eccv16.variables_from_torch(state_dict, width=TINY)
  np.testing.assert_array_equal(variables["params"]["conv3_2"]["kernel"],
                                state_dict["model3.2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables["batch_stats"]["bn7"]["var"],
                                state_dict["model7.6.running_var"])

  broken = dict(state_dict)
  del broken["model5.4.bias"]
  broken["model8.2.weight"] = np.zeros((16, 16, 5, 5), np.float32)
  broken["model9.0.weight"] = np.zeros(3, np.float32)
  with pytest.raises(WeightFileError) as info:
    eccv16.variables_from_torch(broken, width=TINY, source="broken.pth")
  message = str(info.value)
  for fragment in ("broken.pth", "model5.4.bias", "model9.0.weight",
                   "model8.2.weight: expected (16, 16, 3, 3), found (16, 16, 5, 5)"):
    assert fragment in message

  with pytest.raises(WeightFileError, match="model1.0.weight"):
    eccv16.variables_from_torch(state_dict, width=1.0)


def test_import_refuses_a_different_ab_table():
  state_dict = _tiny_state_dict()
  permuted = dict(state_dict)
  permuted["model_out.weight"] = state_dict["model_out.weight"][:, ::-1].copy()
  with pytest.raises(WeightFileError, match="model_out.weight.*ab bin table"):
    eccv16.variables_from_torch(permuted, width=TINY)
  nudged = dict(state_dict)
  nudged["model_out.weight"] = state_dict["model_out.weight"] + 1e-7
  eccv16.variables_from_torch(nudged, width=TINY)


def test_truncated_release_file_names_it(tmp_path):
  torch = pytest.importorskip("torch")
  path = tmp_path / "release.pth"
  torch.save({k: torch.from_numpy(v) for k, v in _tiny_state_dict().items()}, path)
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(WeightFileError, match="release.pth"):
    eccv16.load_torch_eccv16(path, width=TINY)
