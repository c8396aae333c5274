"""Frechet Inception Distance (FID) with the InceptionV3 of pytorch-fid, in Flax linen.

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

Preprocessing is pytorch-fid's: sRGB in [0, 1] (uint8 / 255), bilinear resize to 299x299 with
half-pixel centres (`align_corners=False`) and no antialiasing, then 2x - 1 to [-1, 1].

Calling convention::

  variables = load_inception("pt_inception-2015-12-05-6726825d.pth")
  score = fid(real_images, fake_images, variables)        # iterables of HxWx3 images
  # or, fed as an evaluation goes:
  acc = FidAccumulator(variables, names=("model", "gray"))
  acc.add(truth_HW3, model=colorized_HW3, gray=gray_HW3)
  acc.result()                                             # {'model': fid, 'gray': fid}

The colorjax FID protocol (what `colorjax eval --fid-weights` reports): the distance between the
feature distribution of the colorized results and that of THEIR OWN ground truths (paired sets of
equal size), each image taken at the resolution it was evaluated at (the full-resolution output,
or the 256x256 center crop under the 'center' protocol) and resized to 299x299 as above. The gray
baseline (the L channel with ab = 0) gets the same treatment.

This is not the ColTran FID-5K protocol (Kumar et al., "Colorization Transformer", 2021), which
uses the first 5000 ImageNet validation images at 256x256, nor the full 50K-image ImageNet val
protocol of other papers. FID is biased by the sample size (it falls as N grows, markedly below a
few thousand images, and it is undefined in spirit for N < 2048 where the covariances are
singular), and it changes with the resize filter, the crop, the JPEG/PNG round trip and the
Inception port. So an FID is comparable only with one computed on the same images, the same N,
at the same resolution with the same network; a colorjax number on a folder of 100 photos must
not be set beside a published FID-5K.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorjax import metrics
from colorjax import torch_weights

INPUT_SIZE = 299
"""Side of the square image InceptionV3 sees (pytorch-fid resizes every input to it)."""
MIN_INPUT_SIZE = 75
"""The smallest input the network's strides and valid convolutions accept."""
FEATURE_DIM = 2048
BN_EPSILON = 1e-3

_IGNORED_PREFIXES = ("fc.", "AuxLogits.")
"""Keys of the classifier heads: present in the weight files, not part of the feature network."""

Padding = tuple[int, int]


class BasicConv(nn.Module):
  """Conv (no bias) -> BatchNorm(eps 1e-3, running stats) -> ReLU; torchvision's BasicConv2d."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: Padding = (0, 0)
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x_BHWC):
    ph, pw = self.padding
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=((ph, ph), (pw, pw)),
                use_bias=False, precision=self.precision, name="conv")(x_BHWC)
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

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
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

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
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

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
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

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
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

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(BasicConv, precision=self.precision)
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
  """
  precision: Any = jax.lax.Precision.HIGHEST
  tf_pooling: bool = True

  @nn.compact
  def __call__(self, x_BHW3):
    if x_BHW3.ndim != 4 or x_BHW3.shape[-1] != 3 or min(x_BHW3.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(f"InceptionV3: expected (B, H, W, 3) with H, W >= {MIN_INPUT_SIZE}, "
                       f"got {x_BHW3.shape}")
    conv = functools.partial(BasicConv, precision=self.precision)
    p = dict(precision=self.precision, tf_pooling=self.tf_pooling)
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
    x = InceptionB(precision=self.precision, name="Mixed_6a")(x)
    x = InceptionC(128, **p, name="Mixed_6b")(x)
    x = InceptionC(160, **p, name="Mixed_6c")(x)
    x = InceptionC(160, **p, name="Mixed_6d")(x)
    x = InceptionC(192, **p, name="Mixed_6e")(x)
    x = InceptionD(precision=self.precision, name="Mixed_7a")(x)
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


# ----------------------------------------------------------------------------------------------
# Preprocessing and features
# ----------------------------------------------------------------------------------------------


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Source indices (i0, i1) and weights of i1 for a half-pixel-centre bilinear resize."""
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
  src = np.maximum(src, 0.0)
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  return i0, i1, src - i0


def preprocess(image_HW3, size: int = INPUT_SIZE) -> np.ndarray:
  """One image -> the network's input `(size, size, 3)` float32 in [-1, 1] (pytorch-fid's).

  `image_HW3` is uint8 RGB or float RGB in [0, 1], any size. Bilinear resize with half-pixel
  centres (torch's `interpolate(mode='bilinear', align_corners=False)`, no antialiasing).
  """
  image = np.asarray(image_HW3)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"FID: expected an RGB image of shape (H, W, 3), got {image.shape}")
  # float64 throughout: torch's float32 kernel places its samples up to ~1e-4 px off (float32
  # index arithmetic at indices ~300), which moves values by up to ~1e-4; this is the exact filter.
  x = image / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
  r0, r1, wr = _bilinear_taps(x.shape[0], size)
  c0, c1, wc = _bilinear_taps(x.shape[1], size)
  rows = x[r0] * (1.0 - wr)[:, None, None] + x[r1] * wr[:, None, None]
  out = rows[:, c0] * (1.0 - wc)[None, :, None] + rows[:, c1] * wc[None, :, None]
  return (2.0 * out - 1.0).astype(np.float32)


@jax.jit
def _features_step(variables, x_BHW3):
  return InceptionV3().apply(variables, x_BHW3)


def _features_of_batch(variables, batch: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
  """Features of up to `batch_size` preprocessed images; pads so one compiled shape serves all."""
  x = np.stack(batch)
  if x.shape[0] < batch_size:
    x = np.concatenate([x, np.zeros((batch_size - x.shape[0],) + x.shape[1:], x.dtype)])
  return np.asarray(_features_step(variables, x))[:len(batch)]


def pool3_features(variables, images_uint8_BHW3: Iterable, batch_size: int = 32) -> np.ndarray:
  """`(N, 2048)` float32 pool3 features of N images (an array `(N, H, W, 3)` or an iterable of
  HxWx3 images of any sizes; uint8 or float in [0, 1]), preprocessed as pytorch-fid does.

  Images are resized on the host, then run `batch_size` at a time on the default device; the
  last batch is zero-padded so that one compiled shape serves every call.
  """
  out, batch = [], []
  for image in images_uint8_BHW3:
    batch.append(preprocess(image))
    if len(batch) == batch_size:
      out.append(_features_of_batch(variables, batch, batch_size))
      batch = []
  if batch:
    out.append(_features_of_batch(variables, batch, batch_size))
  if not out:
    return np.zeros((0, FEATURE_DIM), np.float32)
  return np.concatenate(out)


def _low_rank_frechet_distance(x_ND: np.ndarray, y_MD: np.ndarray) -> float:
  """`metrics.frechet_distance` of the two sets' Gaussians, exact, for N, M < D.

  With centred, scaled features A = (x - mu_x) / sqrt(N - 1) (so sigma_x = A^T A) and B likewise,
  the eigenvalues of sigma_x sigma_y are those of (A B^T)(A B^T)^T: Tr sqrtm(sigma_x sigma_y) is
  the sum of the singular values of the N x M matrix A B^T. That costs O(D N M) instead of
  several D x D eigendecompositions (D = 2048), and needs no square root of near-zero
  eigenvalues, which is where the D x D route loses its last digits on small sets.
  """
  a = (x_ND - x_ND.mean(0)) / np.sqrt(x_ND.shape[0] - 1)
  b = (y_MD - y_MD.mean(0)) / np.sqrt(y_MD.shape[0] - 1)
  diff = x_ND.mean(0) - y_MD.mean(0)
  trace_sqrt_product = np.linalg.svd(a @ b.T, compute_uv=False).sum()
  return float(diff @ diff + np.sum(a * a) + np.sum(b * b) - 2.0 * trace_sqrt_product)


def fid_from_features(real_ND, fake_MD) -> float:
  """FID between two sets of pool3 features (N, M >= 2).

  The Frechet distance of `metrics.feature_statistics` of both sets (`metrics.frechet_distance`);
  sets smaller than the feature dimension take an exact low-rank route to the same number.
  """
  real = np.asarray(real_ND, np.float64)
  fake = np.asarray(fake_MD, np.float64)
  for name, feats in (("real", real), ("fake", fake)):
    if feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] != real.shape[1]:
      raise ValueError(f"FID: the {name} features must be (N >= 2, {real.shape[-1]}), "
                       f"got {feats.shape}")
  if max(real.shape[0], fake.shape[0]) < real.shape[1]:
    return _low_rank_frechet_distance(real, fake)
  mu1, sigma1 = metrics.feature_statistics(real)
  mu2, sigma2 = metrics.feature_statistics(fake)
  return metrics.frechet_distance(mu1, sigma1, mu2, sigma2)


def fid(real_images_iter: Iterable, fake_images_iter: Iterable, variables,
        batch_size: int = 32) -> float:
  """FID between two image sets (iterables of HxWx3 uint8 / [0, 1] float images)."""
  features = {}
  for name, images in (("real", real_images_iter), ("fake", fake_images_iter)):
    features[name] = pool3_features(variables, images, batch_size)
    if features[name].shape[0] < 2:
      raise ValueError(f"FID needs at least 2 images per set; the {name} set has "
                       f"{features[name].shape[0]}")
  return fid_from_features(features["real"], features["fake"])


class FidAccumulator:
  """FID of one or more generated sets against the real set, fed image by image.

  Each `add` takes one real image and its generated counterparts (paired sets, the colorjax
  protocol); images are preprocessed at once and run through the network `batch_size` at a
  time, so memory stays bounded whatever the number of images.

    acc = FidAccumulator(variables, names=("model", "gray"))
    for truth, model_rgb, gray_rgb in ...:
      acc.add(truth, model=model_rgb, gray=gray_rgb)
    acc.result()   # {'model': 12.3, 'gray': 45.6}
  """

  def __init__(self, variables, names: Sequence[str] = ("model",), batch_size: int = 32):
    if not names or len(set(names)) != len(names) or "real" in names:
      raise ValueError(f"FidAccumulator: names must be distinct and not 'real', got {names!r}")
    self.variables = variables
    self.names = tuple(names)
    self.batch_size = batch_size
    self._pending: list[tuple[str, np.ndarray]] = []
    self._features: dict[str, list[np.ndarray]] = {n: [] for n in ("real",) + self.names}

  def add(self, real_HW3, **fakes_HW3) -> None:
    """Adds one real image and one image of each generated set (keyword = set name)."""
    if set(fakes_HW3) != set(self.names):
      raise ValueError(f"FidAccumulator.add: expected images for {sorted(self.names)}, "
                       f"got {sorted(fakes_HW3)}")
    self._pending.append(("real", preprocess(real_HW3)))
    self._pending.extend((n, preprocess(fakes_HW3[n])) for n in self.names)
    while len(self._pending) >= self.batch_size:
      self._flush(self._pending[:self.batch_size])
      self._pending = self._pending[self.batch_size:]

  def _flush(self, items: list[tuple[str, np.ndarray]]) -> None:
    feats = _features_of_batch(self.variables, [x for _, x in items], self.batch_size)
    for (name, _), f in zip(items, feats):
      self._features[name].append(f)

  def features(self) -> dict[str, np.ndarray]:
    """{'real': (N, 2048), name: (N, 2048), ...} of everything added so far."""
    if self._pending:
      self._flush(self._pending)
      self._pending = []
    return {n: np.stack(f) if f else np.zeros((0, FEATURE_DIM), np.float32)
            for n, f in self._features.items()}

  def result(self) -> dict[str, float]:
    """{name: FID of that set against the real set}; needs at least 2 images."""
    feats = self.features()
    if feats["real"].shape[0] < 2:
      raise ValueError(f"FID needs at least 2 images, {feats['real'].shape[0]} were added")
    return {n: fid_from_features(feats["real"], feats[n]) for n in self.names}
