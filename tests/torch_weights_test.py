"""Tests of the torch-free state_dict reader against torch's own saving and loading."""
import collections
import os
import pickle
import tracemalloc
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from colorjax import torch_weights
from colorjax.torch_weights import WeightFileError


@pytest.fixture(name="torch")
def torch_fixture():
  """torch, for the tests that compare with it; the others run without it."""
  return pytest.importorskip("torch")


def _tricky_state_dict(torch):
  """Tensors that exercise dtypes, strides, storage offsets and shared storages."""
  gen = torch.Generator().manual_seed(0)
  base = torch.randn(6, 8, generator=gen)
  module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
  module[1].running_mean.normal_(generator=gen)
  state_dict = module.state_dict()  # an OrderedDict with torch's `_metadata` attribute
  state_dict.update({
      "transposed": base.t(),                       # strides (1, 8)
      "strided_view": base[1::2, 3::2],             # offset 11, strides (16, 2), shares `base`
      "base": base,
      "half": torch.randn(3, 5, generator=gen).half(),
      "half_transposed": torch.randn(4, 2, generator=gen).half().t(),
      "bfloat16": torch.randn(7, generator=gen).bfloat16(),
      "float64": torch.randn(2, 2, generator=gen).double(),
      "int64_scalar": torch.tensor(12345678901),
      "int32": torch.arange(5, dtype=torch.int32),
      "uint8": torch.arange(250, 256, dtype=torch.uint8),
      "bool": torch.tensor([True, False, True]),
      "empty": torch.zeros(0, 3),
  })
  return state_dict


def _as_numpy(tensor):
  """torch's values as numpy; bfloat16, which numpy lacks, widened to float32 exactly."""
  if str(tensor.dtype) == "torch.bfloat16":
    return tensor.float().numpy()
  return tensor.contiguous().numpy()


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_read_state_dict_matches_torch(torch, tmp_path, zip_format):
  path = tmp_path / "weights.pt"
  expected = _tricky_state_dict(torch)
  torch.save(expected, path, _use_new_zipfile_serialization=zip_format)

  got = torch_weights.read_state_dict(path)

  assert list(got) == list(expected)
  for key, tensor in expected.items():
    array = got[key]
    assert array.shape == tuple(tensor.shape), key
    assert array.flags.c_contiguous, key
    want = _as_numpy(tensor)
    if str(tensor.dtype) == "torch.bfloat16":
      assert array.dtype.name == "bfloat16"
      np.testing.assert_array_equal(array.astype(np.float32), want)
    else:
      assert array.dtype == want.dtype, key
      np.testing.assert_array_equal(array, want, err_msg=key)


def test_unwraps_training_checkpoint_wrappers(torch, tmp_path):
  weights = {"w": torch.randn(2, 3)}
  for wrapper in ("state_dict", "model"):
    path = tmp_path / f"{wrapper}.pth"
    torch.save({wrapper: weights, "epoch": 7}, path)
    got = torch_weights.read_state_dict(path)
    assert list(got) == ["w"]
    np.testing.assert_array_equal(got["w"], weights["w"].numpy())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_truncated_file_is_refused(torch, tmp_path, zip_format):
  path = tmp_path / "weights.pt"
  torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=zip_format)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(WeightFileError, match="weights.pt"):
    torch_weights.read_state_dict(path)


def test_missing_file_names_it(tmp_path):
  with pytest.raises(WeightFileError, match="nowhere.pt"):
    torch_weights.read_state_dict(tmp_path / "nowhere.pt")


class _RunsShell:
  """Pickles as a call of os.system: what a malicious weight file does on plain pickle.load."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


def _malicious_zip(path, payload):
  with zipfile.ZipFile(path, "w") as archive:
    archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
    archive.writestr("archive/byteorder", "little")
    archive.writestr("archive/version", "3\n")


def test_disallowed_global_is_refused_without_running_it(tmp_path):
  marker = tmp_path / "pwned"
  payload = collections.OrderedDict(w=_RunsShell(marker))
  system_name = f"{os.system.__module__}.system"  # 'posix.system' on Linux

  zipped = tmp_path / "evil.pt"
  _malicious_zip(zipped, payload)
  with pytest.raises(WeightFileError, match=f"evil.pt.*{system_name}"):
    torch_weights.read_state_dict(zipped)

  raw = tmp_path / "evil_raw.pt"
  raw.write_bytes(pickle.dumps(payload, protocol=2))
  with pytest.raises(WeightFileError, match=system_name):
    torch_weights.read_state_dict(raw)
  assert not marker.exists()


def test_whole_module_pickle_is_refused(torch, tmp_path):
  path = tmp_path / "module.pt"
  torch.save(torch.nn.Linear(2, 2), path)
  with pytest.raises(WeightFileError, match="torch.nn.modules.linear.Linear"):
    torch_weights.read_state_dict(path)


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "list, not a state_dict"),
    ({"w": 3, "b": None}, "'w' holds a int, not a tensor"),
])
def test_non_state_dict_is_refused(torch, tmp_path, obj, message):
  path = tmp_path / "other.pt"
  torch.save(obj, path)
  with pytest.raises(WeightFileError, match=f"other.pt.*{message}"):
    torch_weights.read_state_dict(path)


def test_storage_past_its_end_is_refused(torch, tmp_path):
  path = tmp_path / "short.pt"
  torch.save({"w": torch.randn(16)}, path)
  rewritten = tmp_path / "shortened.pt"
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(rewritten, "w") as dst:
    for name in src.namelist():
      data = src.read(name)
      dst.writestr(name, data[:8] if name.endswith("/data/0") else data)
  with pytest.raises(WeightFileError, match="shortened.pt.*truncated"):
    torch_weights.read_state_dict(rewritten)


def _peak_bytes(fn):
  tracemalloc.start()
  try:
    fn()
  finally:
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
  return peak


def test_zip_bomb_is_refused_before_it_is_inflated(torch, tmp_path):
  path = tmp_path / "small.pt"
  torch.save({"w": torch.zeros(16)}, path)
  bomb = tmp_path / "bomb.pt"
  inflated = 64 << 20
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(bomb, "w") as dst:
    for name in src.namelist():
      if not name.endswith("/data/0"):
        dst.writestr(name, src.read(name))
        continue
      # 64 MiB of zeros deflated to ~64 KB, where the pickle expects 16 floats (64 bytes).
      info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      with dst.open(info, "w", force_zip64=True) as record:
        chunk = bytes(1 << 20)
        for _ in range(inflated >> 20):
          record.write(chunk)
  assert bomb.stat().st_size < inflated // 100

  def read():
    with pytest.raises(WeightFileError, match=r"bomb.pt.*data/0.*declares 67108864 bytes, 64 "):
      torch_weights.read_state_dict(bomb)
  assert _peak_bytes(read) < 4 << 20


def test_legacy_file_declaring_more_than_it_holds_is_refused_before_reading(torch, tmp_path):
  path = tmp_path / "big.pt"
  torch.save({"w": torch.zeros(1 << 22)}, path, _use_new_zipfile_serialization=False)  # 16 MiB
  small = tmp_path / "cut.pt"
  small.write_bytes(path.read_bytes()[:4096])

  def read():
    with pytest.raises(WeightFileError, match=r"cut.pt.*needs 16777216 bytes.*truncated"):
      torch_weights.read_state_dict(small)
  assert _peak_bytes(read) < 4 << 20


def test_check_state_dict_lists_every_problem():
  state_dict = {"a": np.zeros((2, 3)), "b": np.zeros(4), "extra1": np.zeros(1),
                "extra2": np.zeros(1)}
  expected = {"a": (3, 2), "b": (4,), "gone1": (1,), "gone2": (5, 5)}
  with pytest.raises(WeightFileError) as info:
    torch_weights.check_state_dict(state_dict, expected, source="ckpt.pth")
  message = str(info.value)
  assert message.startswith("ckpt.pth")
  for fragment in ("gone1", "gone2", "extra1", "extra2", "a: expected (3, 2), found (2, 3)"):
    assert fragment in message
  assert "b:" not in message
  torch_weights.check_state_dict({"b": np.zeros(4)}, {"b": (4,)})


def test_conv_and_linear_kernels_match_torch(torch):
  gen = torch.Generator().manual_seed(1)
  x_BCHW = torch.randn(2, 3, 9, 9, generator=gen)
  conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1)
  want = conv(x_BCHW).detach().numpy().transpose(0, 2, 3, 1)
  got = lax.conv_general_dilated(
      jnp.asarray(x_BCHW.numpy().transpose(0, 2, 3, 1)),
      jnp.asarray(torch_weights.conv_kernel(conv.weight.detach().numpy())), (2, 2),
      ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")) + conv.bias.detach().numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  linear = torch.nn.Linear(7, 4)
  x = torch.randn(3, 7, generator=gen)
  got = x.numpy() @ torch_weights.linear_kernel(linear.weight.detach().numpy())
  np.testing.assert_allclose(got + linear.bias.detach().numpy(), linear(x).detach().numpy(),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, stride, padding", [(4, 2, 1), (3, 2, 0)])
def test_conv_transpose_kernel_matches_torch(torch, kernel, stride, padding):
  gen = torch.Generator().manual_seed(2)
  x_BCHW = torch.randn(2, 6, 5, 7, generator=gen)
  deconv = torch.nn.ConvTranspose2d(6, 3, kernel, stride=stride, padding=padding)
  want = deconv(x_BCHW).detach().numpy().transpose(0, 2, 3, 1)
  pad = kernel - 1 - padding
  layer = nn.ConvTranspose(3, (kernel, kernel), strides=(stride, stride),
                           padding=((pad, pad), (pad, pad)), transpose_kernel=True)
  params = {"kernel": torch_weights.conv_transpose_kernel(deconv.weight.detach().numpy()),
            "bias": deconv.bias.detach().numpy()}
  got = layer.apply({"params": params}, x_BCHW.numpy().transpose(0, 2, 3, 1))
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
