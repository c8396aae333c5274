"""InceptionV3 in Flax linen, the "FID Inception" of pytorch-fid, and its weight loading.

The network is the "FID Inception" of pytorch-fid (M. Seitzer, github.com/mseitzer/pytorch-fid,
`fid_inception_v3`): torchvision's InceptionV3 layout with the TensorFlow FID graph's pooling,
i.e. the 3x3 average pools inside the Mixed_5b-5d (A), Mixed_6b-6e (C) and Mixed_7b (E) blocks
exclude the zero padding from their averages, and Mixed_7c's pool branch is a 3x3 MAX pool.
Features are the 2048-d global average of Mixed_7c ("pool3"). BatchNorm eps is 1e-3 and uses the
stored running statistics (inference only).

Weights come from a file the user supplies, nothing is downloaded: pytorch-fid's
`pt_inception-2015-12-05-6726825d.pth` (the TensorFlow 2015-12-05 Inception ported to PyTorch,
keys `Conv2d_1a_3x3.conv.weight`, `Conv2d_1a_3x3.bn.running_mean`, ..., `Mixed_7c.branch_pool.bn.*`,
plus an unused 1008-way `fc.*`). A torchvision `inception_v3` state_dict has the same key names
(its `AuxLogits.*` and `fc.*` are dropped too) and loads, but its weights were trained with
torchvision's pooling, so distances computed with it are not FID as published anywhere.

Used as FID's feature network (`colorjax.fid`) and, with torchvision's pooling
(`tf_pooling=False`), as a semantic backbone (`colorjax.models.semantic`). `width` scales every
channel count (tiny random test backbones only; FID and the weight files are full width).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorjax import torch_weights
from colorjax.models import backbones

INPUT_SIZE = 299
"""Side of the square image InceptionV3 sees (pytorch-fid resizes every input to it)."""
MIN_INPUT_SIZE = 75
"""The smallest input the network's strides and valid convolutions accept."""
FEATURE_DIM = 2048
"""Size of the pool3 embedding at full width (Mixed_7c's 320 + 2 x 768 + 192 channels)."""
BN_EPSILON = 1e-3

_IGNORED_PREFIXES = ("fc.", "AuxLogits.")
"""Keys of the classifier heads: present in the weight files, not part of the feature network."""

Padding = tuple[int, int]


def embedding_size(width: float = 1.0) -> int:
  """Channels of the pool3 embedding at multiplier `width` (Mixed_7c's concatenated branches)."""
  scaled = functools.partial(backbones.scaled_channels, width=width)
  return scaled(320) + 4 * scaled(384) + scaled(192)


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm(eps 1e-3, running stats) -> ReLU; torchvision's BasicConv2d
  with `features` scaled by `width`."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: Padding = (0, 0)
  precision: Any = jax.lax.Precision.HIGHEST
  width: float = 1.0

  @nn.compact
  def __call__(self, x_BHWC):
    ph, pw = self.padding
    x = nn.Conv(backbones.scaled_channels(self.features, self.width), self.kernel,
                strides=self.strides, padding=((ph, ph), (pw, pw)), use_bias=False,
                precision=self.precision, name="conv")(x_BHWC)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x_BHWC, tf_pooling: bool = True):
  """3x3 stride-1 average pool; TensorFlow's SAME pool (zero padding excluded from the mean) or,
  with `tf_pooling=False`, torchvision's (zero padding counted)."""
  return nn.avg_pool(x_BHWC, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=not tf_pooling)


def _max_pool_3x3_same(x_BHWC):
  return nn.max_pool(x_BHWC, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_stride2(x_BHWC):
  return nn.max_pool(x_BHWC, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (pool_features wide)."""
  pool_features: int
  precision: Any = jax.lax.Precision.HIGHEST
  tf_pooling: bool = True
  width: float = 1.0

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision, width=self.width)
    b1 = conv(64, (1, 1), name="branch1x1")(x)
    b5 = conv(48, (1, 1), name="branch5x5_1")(x)
    b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = conv(self.pool_features, (1, 1), name="branch_pool")(
        _avg_pool_3x3_same(x, self.tf_pooling))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a, the 35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST
  width: float = 1.0

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision, width=self.width)
    b3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-6e: factorised 7x7 convolutions (1x7 and 7x1), channels_7x7 wide inside."""
  channels_7x7: int
  precision: Any = jax.lax.Precision.HIGHEST
  tf_pooling: bool = True
  width: float = 1.0

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision, width=self.width)
    c7 = self.channels_7x7
    row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
    b1 = conv(192, (1, 1), name="branch1x1")(x)
    b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
    b7 = conv(c7, **row, name="branch7x7_2")(b7)
    b7 = conv(192, **col, name="branch7x7_3")(b7)
    bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
    bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
    bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
    bd = conv(192, **row, name="branch7x7dbl_5")(bd)
    bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3_same(x, self.tf_pooling))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a, the 17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""
  precision: Any = jax.lax.Precision.HIGHEST
  width: float = 1.0

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision, width=self.width)
    b3 = conv(192, (1, 1), name="branch3x3_1")(x)
    b3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (pool='avg') and Mixed_7c (pool='max', the FID graph's quirk): split 1x3 / 3x1."""
  pool: str = "avg"
  precision: Any = jax.lax.Precision.HIGHEST
  tf_pooling: bool = True
  width: float = 1.0

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision, width=self.width)
    row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
    b1 = conv(320, (1, 1), name="branch1x1")(x)
    b3 = conv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, **row, name="branch3x3_2a")(b3),
                          conv(384, **col, name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([conv(384, **row, name="branch3x3dbl_3a")(bd),
                          conv(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = (_avg_pool_3x3_same(x, self.tf_pooling) if self.pool == "avg"
              else _max_pool_3x3_same(x))
    bp = conv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """The FID InceptionV3 up to pool3: `(B, H, W, 3)` in [-1, 1] -> `(B, 2048)` features.

  Takes the already preprocessed input (see `preprocess`); H, W >= 75 (299 for FID).
  `precision` is that of every convolution: HIGHEST keeps float32 accuracy on GPUs and TPUs,
  whose default would round the operands (TF32 / bf16) and move FID in its last digits.

  `tf_pooling=False` gives torchvision's `inception_v3` instead (same keys and shapes): its
  average pools count the zero padding and Mixed_7c pools by average. That is the network of a
  torchvision `inception_v3` state_dict, which report 001's model 3 uses as a frozen backbone
  (`features`: sRGB in [0, 1] -> 2x - 1, which is what torchvision's `transform_input` of the
  pretrained weights makes of its ImageNet-normalised input).

  `width` scales every channel count, giving `embedding_size(width)` features: only for random
  test backbones, as the weight files are full width.
  """
  precision: Any = jax.lax.Precision.HIGHEST
  tf_pooling: bool = True
  width: float = 1.0

  @nn.compact
  def __call__(self, x_BHW3):
    if x_BHW3.ndim != 4 or x_BHW3.shape[-1] != 3 or min(x_BHW3.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(f"InceptionV3: expected (B, H, W, 3) with H, W >= {MIN_INPUT_SIZE}, "
                       f"got {x_BHW3.shape}")
    conv = functools.partial(BasicConv, precision=self.precision, width=self.width)
    p = dict(precision=self.precision, tf_pooling=self.tf_pooling, width=self.width)
    x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x_BHW3)
    x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_stride2(x)
    x = InceptionA(32, **p, name="Mixed_5b")(x)
    x = InceptionA(64, **p, name="Mixed_5c")(x)
    x = InceptionA(64, **p, name="Mixed_5d")(x)
    x = InceptionB(precision=self.precision, width=self.width, name="Mixed_6a")(x)
    x = InceptionC(128, **p, name="Mixed_6b")(x)
    x = InceptionC(160, **p, name="Mixed_6c")(x)
    x = InceptionC(160, **p, name="Mixed_6d")(x)
    x = InceptionC(192, **p, name="Mixed_6e")(x)
    x = InceptionD(precision=self.precision, width=self.width, name="Mixed_7a")(x)
    x = InceptionE("avg", **p, name="Mixed_7b")(x)
    x = InceptionE("max" if self.tf_pooling else "avg", **p, name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))

  def features(self, rgb_BHW3):
    """(pool3 embedding_BC, {}) of sRGB images in [0, 1]; the backbone interface of
    `colorjax.models.backbones` (no resize here: the caller sizes the input, >= 75 px)."""
    return self(2.0 * rgb_BHW3 - 1.0), {}


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _abstract_variables() -> Mapping[str, Any]:
  shape = (1, INPUT_SIZE, INPUT_SIZE, 3)
  return jax.eval_shape(lambda: InceptionV3().init(jax.random.PRNGKey(0), jnp.zeros(shape)))


def _conv_paths() -> list[tuple[str, ...]]:
  """Module paths of every BasicConv, e.g. ('Mixed_5b', 'branch1x1'), in definition order."""
  paths = []

  def walk(tree, path):
    if "conv" in tree and "bn" in tree:
      paths.append(path)
      return
    for name, sub in tree.items():
      walk(sub, path + (name,))

  walk(_abstract_variables()["params"], ())
  return paths


def expected_torch_shapes() -> dict[str, tuple[int, ...]]:
  """{torch key: shape} of the feature network's tensors (no classifier, no step counters)."""
  params = _abstract_variables()["params"]
  shapes = {}
  for path in _conv_paths():
    node = params
    for name in path:
      node = node[name]
    kh, kw, cin, cout = node["conv"]["kernel"].shape
    prefix = ".".join(path)
    shapes[f"{prefix}.conv.weight"] = (cout, cin, kh, kw)
    for key in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{prefix}.bn.{key}"] = (cout,)
  return shapes


def num_params() -> int:
  """Trainable parameters of the feature network (conv kernels, BN scales and biases)."""
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(
      _abstract_variables()["params"])))


def inception_variables_from_torch(state_dict: Mapping[str, Any],
                                   source: str = "state_dict") -> dict[str, Any]:
  """Flax variables {'params', 'batch_stats'} of `InceptionV3` from a pytorch-fid state_dict.

  Args:
    state_dict: {key: array} as `torch_weights.read_state_dict` returns it, with pytorch-fid's
      (or torchvision's inception_v3) key names. `fc.*`, `AuxLogits.*` and `*.num_batches_tracked`
      are ignored.
    source: named in error messages (the file path).

  Raises:
    torch_weights.WeightFileError: listing every missing, unexpected or misshapen key.
  """
  kept = {k: v for k, v in state_dict.items()
          if not k.startswith(_IGNORED_PREFIXES) and not k.endswith(".num_batches_tracked")}
  torch_weights.check_state_dict(kept, expected_torch_shapes(), source=source)
  params: dict[str, Any] = {}
  stats: dict[str, Any] = {}

  def put(tree, path, leaf, value):
    for name in path:
      tree = tree.setdefault(name, {})
    tree[leaf] = jnp.asarray(np.asarray(value, np.float32))

  for path in _conv_paths():
    prefix = ".".join(path)
    kernel = torch_weights.conv_kernel(kept[f"{prefix}.conv.weight"])
    put(params, path + ("conv",), "kernel", kernel)
    put(params, path + ("bn",), "scale", kept[f"{prefix}.bn.weight"])
    put(params, path + ("bn",), "bias", kept[f"{prefix}.bn.bias"])
    put(stats, path + ("bn",), "mean", kept[f"{prefix}.bn.running_mean"])
    put(stats, path + ("bn",), "var", kept[f"{prefix}.bn.running_var"])
  return {"params": params, "batch_stats": stats}


def load_inception(path: str | os.PathLike) -> dict[str, Any]:
  """Variables of `InceptionV3` from a pytorch-fid (or torchvision) weight file the user supplies.

  Raises:
    torch_weights.WeightFileError: the file is unreadable or is not an InceptionV3 state_dict.
  """
  path = os.fspath(path)
  return inception_variables_from_torch(torch_weights.read_state_dict(path), source=path)
