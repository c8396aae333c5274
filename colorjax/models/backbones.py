"""Pretrained ImageNet backbones in torchvision's layout: ResNet-18, VGG16 and VGG19 (Flax linen).

They serve two purposes:
  * semantic conditioning (seed 002: a ResNet-18 embedding for the U-Net and the PatchGAN;
    seed 001: a VGG16 embedding fused into the bottleneck): `features(...)[0]`, one vector per
    image, fed as `semantic_BC`;
  * the perceptual loss of seed 000 (VGG19 activations): `features(...)[1]`, a dict of named
    intermediate activations (`VGG19_PERCEPTUAL_LAYERS` are the usual taps).

Calling convention: `variables = resnet18_variables_from_torch(read_state_dict(path))`, then
`embedding_BC, activations = ResNet18().apply(variables, rgb_BHW3, method='features')`, or
`backbone_variables_from_file('resnet18', path)` for both steps. Weights come from a torchvision
`state_dict` file the user supplies (e.g. `torch.save(torchvision.models.resnet18(weights=...)
.state_dict(), path)`); nothing is downloaded.

Inputs are sRGB in [0, 1], NHWC, any size (>= 32 px); the ImageNet normalisation
(mean 0.485 0.456 0.406, std 0.229 0.224 0.225, as torchvision) is applied inside
(`normalize_input=True`). A gray image, i.e. lightness `l_BHW1` in Lab units [0, 100], is shown to
a backbone as the gray sRGB image of that lightness (a = b = 0; `gray_rgb_from_l`), the same
value repeated in three channels, which is what a grayscale photo saved as RGB looks like.

The backbones always run in inference mode: BatchNorm uses its running statistics (frozen, as
torchvision's `eval()`) and the VGG classifier's dropout is off. Keep their variables out of the
optimizer to freeze them; gradients still flow to the input (the perceptual loss needs that).

Classifier heads: with `include_top=False` (default) the Flax model has no head and the converters
explicitly drop torchvision's `fc.*` / `classifier.*` keys; with `include_top=True` the head is
built and its keys are required. `num_batches_tracked` buffers are always dropped.
"""
from __future__ import annotations

import os
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorjax import color
from colorjax import torch_weights

Dtype = Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNET18_WIDTHS = (64, 128, 256, 512)
VGG_WIDTHS = (64, 128, 256, 512, 512)
VGG16_STAGE_CONVS = (2, 2, 3, 3, 3)
VGG19_STAGE_CONVS = (2, 2, 4, 4, 4)
VGG19_PERCEPTUAL_LAYERS = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4")
"""The VGG19 taps of the usual perceptual loss: the last ReLU of each of the five stages."""


class BackboneOutput(NamedTuple):
  """What a backbone's `__call__` returns.

  embedding_BC: the globally average-pooled last feature map (ResNet-18: the 512-d input of fc;
    VGG: the average of pool5, 512-d).
  activations: named intermediate activations (see each model).
  logits_BK: classifier logits with `include_top`, else None.
  """
  embedding_BC: jax.Array
  activations: dict[str, jax.Array]
  logits_BK: jax.Array | None


def scaled_channels(channels: int, width: float) -> int:
  """Channel count of a layer with `channels` channels at width multiplier `width` (at least 1):
  the rule of every model's `width` option."""
  return max(1, int(round(channels * width)))


def gray_rgb_from_l(l_BHW1):
  """Lightness (Lab units, [0, 100]) -> the gray sRGB image (..., 3) in [0, 1] of that lightness."""
  zeros = jnp.zeros_like(l_BHW1)
  return color.lab_to_rgb(jnp.concatenate([l_BHW1, zeros, zeros], axis=-1))


def imagenet_normalize(rgb_BHW3):
  """sRGB in [0, 1] -> torchvision's ImageNet input normalisation."""
  return (rgb_BHW3 - jnp.asarray(IMAGENET_MEAN, rgb_BHW3.dtype)) / jnp.asarray(
      IMAGENET_STD, rgb_BHW3.dtype)


def _frozen_batch_norm(dtype, param_dtype, name):
  return nn.BatchNorm(use_running_average=True, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, name=name)


def _conv(features, kernel, stride, padding, use_bias, dtype, param_dtype, name):
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((padding, padding), (padding, padding)), use_bias=use_bias,
                 dtype=dtype, param_dtype=param_dtype, name=name)


class Backbone(nn.Module):
  """What the ImageNet backbones share: the optional classifier, the input normalisation, the
  dtypes and `features`. A subclass's `__call__(rgb_BHW3, compute_logits)` returns a
  `BackboneOutput`.

  Attributes:
    include_top: build the ImageNet classifier (`num_classes` logits).
    normalize_input: apply `imagenet_normalize` to the [0, 1] sRGB input.
    dtype, param_dtype: compute and parameter dtypes.
  """
  include_top: bool = False
  num_classes: int = 1000
  normalize_input: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def checked_input(self, rgb_BHW3):
    """`rgb_BHW3`, checked to be (B, H, W, 3), ImageNet-normalised if `normalize_input`."""
    if rgb_BHW3.ndim != 4 or rgb_BHW3.shape[-1] != 3:
      raise ValueError(f"{type(self).__name__} expects sRGB images of shape (B, H, W, 3) in "
                       f"[0, 1], got {rgb_BHW3.shape}; a gray L channel goes through "
                       "gray_rgb_from_l first")
    return imagenet_normalize(rgb_BHW3) if self.normalize_input else rgb_BHW3

  def features(self, rgb_BHW3):
    """(embedding_BC, activations) without the classifier; see the class docstring."""
    out = self(rgb_BHW3, compute_logits=False)
    return out.embedding_BC, out.activations


# ------------------------------------------------------------------------------------------------
# ResNet-18
# ------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
  """torchvision's ResNet BasicBlock: two 3x3 convs with BN, 1x1 conv + BN projection shortcut."""
  features: int
  strides: int = 1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = _conv(self.features, 3, self.strides, 1, False, name="conv1", **kw)(x_BHWC)
    y = nn.relu(_frozen_batch_norm(name="bn1", **kw)(y))
    y = _conv(self.features, 3, 1, 1, False, name="conv2", **kw)(y)
    y = _frozen_batch_norm(name="bn2", **kw)(y)
    shortcut = x_BHWC
    if self.strides != 1 or x_BHWC.shape[-1] != self.features:
      shortcut = _conv(self.features, 1, self.strides, 0, False, name="downsample_0", **kw)(x_BHWC)
      shortcut = _frozen_batch_norm(name="downsample_1", **kw)(shortcut)
    return nn.relu(y + shortcut)


class ResNet18(Backbone):
  """torchvision ResNet-18 (He et al. 2016): 11,689,512 parameters with the 1000-way fc.

  `apply(variables, rgb_BHW3)` -> `BackboneOutput`; `apply(..., method='features')` ->
  (embedding_BC, activations) with activations 'stem' (after conv1/bn1/relu, H/2), 'layer1' (H/4),
  'layer2' (H/8), 'layer3' (H/16), 'layer4' (H/32), and embedding_BC the 512-d average of layer4.
  Flax names mirror torchvision's keys: conv1, bn1, layer{1..4}_{0,1}.{conv1, bn1, conv2, bn2,
  downsample_0, downsample_1}, fc. `widths` other than (64, 128, 256, 512) make tiny test models.
  """
  widths: Sequence[int] = RESNET18_WIDTHS

  @nn.compact
  def __call__(self, rgb_BHW3, compute_logits: bool = True) -> BackboneOutput:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = self.checked_input(rgb_BHW3)
    x = _conv(self.widths[0], 7, 2, 3, False, name="conv1", **kw)(x)
    x = nn.relu(_frozen_batch_norm(name="bn1", **kw)(x))
    activations = {"stem": x}
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, width in enumerate(self.widths, start=1):
      for block in range(2):
        strides = 2 if stage > 1 and block == 0 else 1
        x = BasicBlock(width, strides, name=f"layer{stage}_{block}", **kw)(x)
      activations[f"layer{stage}"] = x
    embedding = jnp.mean(x, axis=(1, 2))
    logits = None
    if self.include_top and compute_logits:
      logits = nn.Dense(self.num_classes, name="fc", **kw)(embedding)
    return BackboneOutput(embedding, activations, logits)


# ------------------------------------------------------------------------------------------------
# VGG16 / VGG19
# ------------------------------------------------------------------------------------------------


def adaptive_avg_pool(x_BHWC, out_h: int, out_w: int):
  """torch.nn.AdaptiveAvgPool2d((out_h, out_w)): bin i spans [floor(i*H/o), ceil((i+1)*H/o))."""
  _, h, w, _ = x_BHWC.shape
  if (h, w) == (out_h, out_w):
    return x_BHWC
  bounds = lambda n, o: [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]
  rows = [jnp.stack([jnp.mean(x_BHWC[:, r0:r1, c0:c1], axis=(1, 2)) for c0, c1 in bounds(w, out_w)],
                    axis=1)
          for r0, r1 in bounds(h, out_h)]
  return jnp.stack(rows, axis=1)


def _vgg_conv_indices(stage_convs: Sequence[int]) -> list[list[int]]:
  """torchvision `features.N` index of every conv, per stage (each conv is followed by a ReLU and
  each stage by a max-pool, which also take an index)."""
  indices, n = [], 0
  for convs in stage_convs:
    indices.append([n + 2 * k for k in range(convs)])
    n += 2 * convs + 1
  return indices


class VGG(Backbone):
  """torchvision VGG without BatchNorm (Simonyan & Zisserman 2015); use `vgg16()` / `vgg19()`.

  `apply(variables, rgb_BHW3)` -> `BackboneOutput`; `apply(..., method='features')` ->
  (embedding_BC, activations) with every ReLU output named relu{stage}_{conv} (VGG19: relu1_1 ..
  relu5_4; VGG16: relu1_1 .. relu5_3), plus 'pool5'; embedding_BC is the 512-d average of pool5.
  Flax names mirror torchvision's keys: features_{N} for the conv at `features.N`, and with
  `include_top` classifier_0, classifier_3, classifier_6 after an adaptive average pool to 7x7.
  VGG16 has 14,714,688 feature parameters (138,357,544 with the classifier); VGG19 20,024,384
  (143,667,240). `widths` / `classifier_features` other than the defaults make tiny test models.
  """
  stage_convs: Sequence[int] = VGG16_STAGE_CONVS
  widths: Sequence[int] = VGG_WIDTHS
  classifier_features: int = 4096

  @nn.compact
  def __call__(self, rgb_BHW3, compute_logits: bool = True) -> BackboneOutput:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = self.checked_input(rgb_BHW3)
    activations = {}
    for stage, (width, indices) in enumerate(
        zip(self.widths, _vgg_conv_indices(self.stage_convs)), start=1):
      for k, index in enumerate(indices, start=1):
        x = nn.relu(_conv(width, 3, 1, 1, True, name=f"features_{index}", **kw)(x))
        activations[f"relu{stage}_{k}"] = x
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    activations["pool5"] = x
    embedding = jnp.mean(x, axis=(1, 2))
    logits = None
    if self.include_top and compute_logits:
      # Flattened in (h, w, c) order; the converter permutes torch's (c, h, w) columns to match.
      h = adaptive_avg_pool(x, 7, 7).reshape(x.shape[0], -1)
      h = nn.relu(nn.Dense(self.classifier_features, name="classifier_0", **kw)(h))
      h = nn.relu(nn.Dense(self.classifier_features, name="classifier_3", **kw)(h))
      logits = nn.Dense(self.num_classes, name="classifier_6", **kw)(h)
    return BackboneOutput(embedding, activations, logits)


def vgg16(**kwargs) -> VGG:
  """torchvision `vgg16` (configuration D): 13 convs in stages of 2, 2, 3, 3, 3."""
  return VGG(stage_convs=VGG16_STAGE_CONVS, **kwargs)


def vgg19(**kwargs) -> VGG:
  """torchvision `vgg19` (configuration E): 16 convs in stages of 2, 2, 4, 4, 4."""
  return VGG(stage_convs=VGG19_STAGE_CONVS, **kwargs)


# ------------------------------------------------------------------------------------------------
# torchvision state_dict -> Flax variables
# ------------------------------------------------------------------------------------------------

# One entry per torch layer: (torch key prefix, Flax module path, kind, torch weight shape).
_Layer = tuple[str, tuple[str, ...], str, tuple[int, ...]]


def _resnet18_layers(widths, include_top, num_classes) -> list[_Layer]:
  layers = [("conv1", ("conv1",), "conv", (widths[0], 3, 7, 7)),
            ("bn1", ("bn1",), "bn", (widths[0],))]
  in_width = widths[0]
  for stage, width in enumerate(widths, start=1):
    for block in range(2):
      torch_block, flax_block = f"layer{stage}.{block}", f"layer{stage}_{block}"
      block_in = in_width if block == 0 else width
      layers += [
          (f"{torch_block}.conv1", (flax_block, "conv1"), "conv", (width, block_in, 3, 3)),
          (f"{torch_block}.bn1", (flax_block, "bn1"), "bn", (width,)),
          (f"{torch_block}.conv2", (flax_block, "conv2"), "conv", (width, width, 3, 3)),
          (f"{torch_block}.bn2", (flax_block, "bn2"), "bn", (width,)),
      ]
      if block == 0 and (stage > 1 or block_in != width):
        layers += [
            (f"{torch_block}.downsample.0", (flax_block, "downsample_0"), "conv",
             (width, block_in, 1, 1)),
            (f"{torch_block}.downsample.1", (flax_block, "downsample_1"), "bn", (width,)),
        ]
    in_width = width
  if include_top:
    layers.append(("fc", ("fc",), "linear", (num_classes, widths[-1])))
  return layers


def _vgg_layers(stage_convs, widths, include_top, classifier_features, num_classes
                ) -> list[_Layer]:
  layers, in_width = [], 3
  for width, indices in zip(widths, _vgg_conv_indices(stage_convs)):
    for index in indices:
      layers.append((f"features.{index}", (f"features_{index}",), "conv_bias",
                     (width, in_width, 3, 3)))
      in_width = width
  if include_top:
    layers += [
        ("classifier.0", ("classifier_0",), "linear_chw",
         (classifier_features, in_width * 7 * 7)),
        ("classifier.3", ("classifier_3",), "linear", (classifier_features, classifier_features)),
        ("classifier.6", ("classifier_6",), "linear", (num_classes, classifier_features)),
    ]
  return layers


def _expected_shapes(layers: list[_Layer]) -> dict[str, tuple[int, ...]]:
  shapes = {}
  for prefix, _, kind, shape in layers:
    if kind == "bn":
      for leaf in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{leaf}"] = shape
    else:
      shapes[f"{prefix}.weight"] = shape
      if kind != "conv":
        shapes[f"{prefix}.bias"] = shape[:1]
  return shapes


def variables_from_layers(state_dict: Mapping[str, Any], layers: list[_Layer],
                           ignored_prefixes: tuple[str, ...], source: str) -> dict:
  kept = {k: v for k, v in state_dict.items()
          if not k.endswith(".num_batches_tracked") and not k.startswith(ignored_prefixes)}
  torch_weights.check_state_dict(kept, _expected_shapes(layers), source=source)
  f32 = lambda key: np.asarray(kept[key], dtype=np.float32)
  params, batch_stats = {}, {}

  def put(tree, path, leaf, value):
    node = tree
    for name in path:
      node = node.setdefault(name, {})
    node[leaf] = value

  for prefix, path, kind, shape in layers:
    if kind == "bn":
      put(params, path, "scale", f32(f"{prefix}.weight"))
      put(params, path, "bias", f32(f"{prefix}.bias"))
      put(batch_stats, path, "mean", f32(f"{prefix}.running_mean"))
      put(batch_stats, path, "var", f32(f"{prefix}.running_var"))
      continue
    weight = f32(f"{prefix}.weight")
    if kind in ("conv", "conv_bias"):
      kernel = torch_weights.conv_kernel(weight)
    elif kind == "linear_chw":
      # torch flattens the 7x7 pooled map in (c, h, w) order, the Flax model in (h, w, c).
      out_features, in_features = shape
      kernel = weight.reshape(out_features, in_features // 49, 7, 7).transpose(2, 3, 1, 0)
      kernel = kernel.reshape(in_features, out_features)
    else:
      kernel = torch_weights.linear_kernel(weight)
    put(params, path, "kernel", np.ascontiguousarray(kernel))
    if kind != "conv":
      put(params, path, "bias", f32(f"{prefix}.bias"))
  variables = {"params": params}
  if batch_stats:
    variables["batch_stats"] = batch_stats
  return variables


def resnet18_variables_from_torch(state_dict: Mapping[str, Any], *, include_top: bool = False,
                                  widths: Sequence[int] = RESNET18_WIDTHS,
                                  num_classes: int = 1000, source: str = "state_dict") -> dict:
  """torchvision ResNet-18 state_dict -> {'params', 'batch_stats'} for `ResNet18(widths,
  include_top)`. Without `include_top`, `fc.*` is dropped. Raises torch_weights.WeightFileError
  listing every missing, unexpected or mis-shaped key (e.g. a ResNet-34 file's extra blocks)."""
  layers = _resnet18_layers(tuple(widths), include_top, num_classes)
  ignored = () if include_top else ("fc.",)
  return variables_from_layers(state_dict, layers, ignored, source)


def vgg_variables_from_torch(state_dict: Mapping[str, Any], stage_convs: Sequence[int], *,
                             include_top: bool = False, widths: Sequence[int] = VGG_WIDTHS,
                             classifier_features: int = 4096, num_classes: int = 1000,
                             source: str = "state_dict") -> dict:
  """torchvision VGG (no BatchNorm) state_dict -> {'params'} for `VGG(stage_convs, ...)`.

  Without `include_top`, `classifier.*` is dropped. Raises torch_weights.WeightFileError listing
  every missing, unexpected or mis-shaped key.
  """
  layers = _vgg_layers(tuple(stage_convs), tuple(widths), include_top, classifier_features,
                       num_classes)
  ignored = () if include_top else ("classifier.",)
  return variables_from_layers(state_dict, layers, ignored, source)


def vgg16_variables_from_torch(state_dict: Mapping[str, Any], **kwargs) -> dict:
  """torchvision `vgg16` state_dict -> variables of `vgg16(...)`, as `vgg_variables_from_torch`."""
  return vgg_variables_from_torch(state_dict, VGG16_STAGE_CONVS, **kwargs)


def vgg19_variables_from_torch(state_dict: Mapping[str, Any], **kwargs) -> dict:
  """torchvision `vgg19` state_dict -> variables of `vgg19(...)`, as `vgg_variables_from_torch`."""
  return vgg_variables_from_torch(state_dict, VGG19_STAGE_CONVS, **kwargs)


BackboneName = Literal["resnet18", "vgg16", "vgg19"]

_CONVERTERS = {
    "resnet18": resnet18_variables_from_torch,
    "vgg16": vgg16_variables_from_torch,
    "vgg19": vgg19_variables_from_torch,
}


def create_backbone(name: BackboneName, **kwargs) -> nn.Module:
  """The backbone module called `name` ('resnet18', 'vgg16' or 'vgg19'), fields from kwargs."""
  constructors = {"resnet18": ResNet18, "vgg16": vgg16, "vgg19": vgg19}
  if name not in constructors:
    raise ValueError(f"unknown backbone {name!r}: use one of {sorted(constructors)}")
  return constructors[name](**kwargs)


def backbone_variables_from_file(name: BackboneName, path: str | os.PathLike,
                                 **converter_kwargs) -> dict:
  """Reads a torchvision state_dict file (torch.save) for backbone `name` into Flax variables.

  `converter_kwargs` (include_top, widths, ...) go to the converter of `name`.

  Raises:
    ValueError: unknown `name`.
    torch_weights.WeightFileError: unreadable file, or keys / shapes that are not `name`'s.
  """
  if name not in _CONVERTERS:
    raise ValueError(f"unknown backbone {name!r}: use one of {sorted(_CONVERTERS)}")
  state_dict = torch_weights.read_state_dict(path)
  return _CONVERTERS[name](state_dict, source=os.fspath(path), **converter_kwargs)
