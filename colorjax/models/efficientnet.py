"""EfficientNet-B0 (Tan & Le 2019) in torchvision's layout, Flax linen: a frozen ImageNet backbone.

Report 001's model 4 fuses an EfficientNet-B0 embedding into its encoder-decoder. This is
torchvision's `efficientnet_b0` up to its global average pool (1280-d), whose variables come from a
torchvision `state_dict` file the user supplies (nothing is downloaded):

  features.0        3x3/2 conv 3 -> 32, BatchNorm, SiLU                      (the stem)
  features.1 .. 7   MBConv stages (expand ratio, kernel, stride, out channels, blocks):
                    (1, 3, 1, 16, 1) (6, 3, 2, 24, 2) (6, 5, 2, 40, 2) (6, 3, 2, 80, 3)
                    (6, 5, 1, 112, 3) (6, 5, 2, 192, 4) (6, 3, 1, 320, 1)
  features.8        1x1 conv 320 -> 1280, BatchNorm, SiLU                    (the head)
  classifier.1      Linear 1280 -> 1000 (after dropout; dropped without `include_top`)

An MBConv block (`features.S.J.block`) is [1x1 expand conv, BN, SiLU] (absent for ratio 1), a
depthwise kxk conv with stride, BN, SiLU, squeeze-and-excitation (global mean -> 1x1 conv `fc1`
to max(1, block input channels // 4), SiLU -> 1x1 conv `fc2`, sigmoid, times the map) and a 1x1
project conv with BN and no activation; the input is added back when stride is 1 and the channels
do not change (stochastic depth is a training-time drop: inference adds the whole block). Every
conv pads (k - 1) / 2 on each side (torch's symmetric padding, not TensorFlow's SAME) and has no
bias except the SE ones. BatchNorm eps is 1e-5 (torchvision's B0-B7 use BatchNorm2d's default)
and always uses the running statistics, as torchvision's `eval()`.

Input: sRGB in [0, 1], NHWC, any size >= 32; the ImageNet normalisation is applied inside, as the
torchvision weights' transforms do. `features(rgb)` -> (embedding_BC 1280-d, activations with
'stem', 'stage1' .. 'stage7', 'head'). `width` scales every channel count (tiny random test
models only; pretrained files are full width).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from colorjax import torch_weights
from colorjax.models import backbones

STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
             (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
"""(expand ratio, kernel, stride, output channels, blocks) of stages features.1 .. features.7."""
BN_EPSILON = 1e-5


def _blocks(width: float):
  """Per MBConv block: (torch prefix, expand, kernel, stride, in, expanded, squeeze, out)."""
  blocks, in_ch = [], backbones.scaled_channels(STEM_CHANNELS, width)
  for stage, (expand, kernel, stride, out, count) in enumerate(B0_STAGES, start=1):
    out_ch = backbones.scaled_channels(out, width)
    for j in range(count):
      blocks.append((f"features.{stage}.{j}.block", expand, kernel, stride if j == 0 else 1,
                     in_ch, in_ch * expand, max(1, in_ch // 4), out_ch))
      in_ch = out_ch
  return blocks


def _flax_name(torch_prefix: str) -> str:
  return torch_prefix.replace(".", "_")


class EfficientNetB0(backbones.Backbone):
  """torchvision `efficientnet_b0`: 5,288,548 parameters with the 1000-way classifier.

  `apply(variables, rgb_BHW3)` -> `backbones.BackboneOutput`; `apply(..., method='features')` ->
  (embedding_BC, activations). Flax module names are torchvision's keys with '.' -> '_'
  (`features_1_0_block_0_0` is `features.1.0.block.0.0`).
  """
  width: float = 1.0

  @nn.compact
  def __call__(self, rgb_BHW3, compute_logits: bool = True):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def conv(x, features, kernel, stride, prefix, groups=1, bias=False):
      pad = (kernel - 1) // 2
      return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                     use_bias=bias, name=_flax_name(prefix), **kw)(x)

    def conv_bn(x, features, kernel, stride, prefix, groups=1, act=True):
      x = conv(x, features, kernel, stride, f"{prefix}.0", groups)
      x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON,
                       name=_flax_name(f"{prefix}.1"), **kw)(x)
      return nn.silu(x) if act else x

    x = self.checked_input(rgb_BHW3)
    x = x.astype(self.dtype or jnp.float32)
    x = conv_bn(x, backbones.scaled_channels(STEM_CHANNELS, self.width), 3, 2, "features.0")
    activations = {"stem": x}
    for prefix, expand, kernel, stride, in_ch, exp_ch, squeeze, out_ch in _blocks(self.width):
      y, k = x, 0
      if expand != 1:
        y = conv_bn(y, exp_ch, 1, 1, f"{prefix}.0")
        k = 1
      y = conv_bn(y, exp_ch, kernel, stride, f"{prefix}.{k}", groups=exp_ch)
      scale = jnp.mean(y, axis=(1, 2), keepdims=True)
      scale = nn.silu(conv(scale, squeeze, 1, 1, f"{prefix}.{k + 1}.fc1", bias=True))
      scale = nn.sigmoid(conv(scale, exp_ch, 1, 1, f"{prefix}.{k + 1}.fc2", bias=True))
      y = conv_bn(y * scale, out_ch, 1, 1, f"{prefix}.{k + 2}", act=False)
      x = x + y if stride == 1 and in_ch == out_ch else y
      stage = prefix.split(".")[1]
      activations[f"stage{stage}"] = x
    x = conv_bn(x, backbones.scaled_channels(HEAD_CHANNELS, self.width), 1, 1, "features.8")
    activations["head"] = x
    embedding = jnp.mean(x, axis=(1, 2))
    logits = None
    if self.include_top and compute_logits:
      logits = nn.Dense(self.num_classes, name="classifier_1", **kw)(embedding)
    return backbones.BackboneOutput(embedding, activations, logits)


def embedding_size(width: float = 1.0) -> int:
  return backbones.scaled_channels(HEAD_CHANNELS, width)


def _layers(width: float, include_top: bool, num_classes: int) -> list:
  """(torch prefix, Flax path, kind, torch weight shape) of every layer, for the converter."""
  layers = []

  def conv_bn(prefix, cout, cin_per_group, kernel):
    layers.append((f"{prefix}.0", (_flax_name(f"{prefix}.0"),), "conv",
                   (cout, cin_per_group, kernel, kernel)))
    layers.append((f"{prefix}.1", (_flax_name(f"{prefix}.1"),), "bn", (cout,)))

  conv_bn("features.0", backbones.scaled_channels(STEM_CHANNELS, width), 3, 3)
  for prefix, expand, kernel, _, in_ch, exp_ch, squeeze, out_ch in _blocks(width):
    k = 0
    if expand != 1:
      conv_bn(f"{prefix}.0", exp_ch, in_ch, 1)
      k = 1
    conv_bn(f"{prefix}.{k}", exp_ch, 1, kernel)
    for fc, cout, cin in (("fc1", squeeze, exp_ch), ("fc2", exp_ch, squeeze)):
      name = f"{prefix}.{k + 1}.{fc}"
      layers.append((name, (_flax_name(name),), "conv_bias", (cout, cin, 1, 1)))
    conv_bn(f"{prefix}.{k + 2}", out_ch, exp_ch, 1)
  last = _blocks(width)[-1][-1]
  conv_bn("features.8", backbones.scaled_channels(HEAD_CHANNELS, width), last, 1)
  if include_top:
    layers.append(("classifier.1", ("classifier_1",), "linear",
                   (num_classes, backbones.scaled_channels(HEAD_CHANNELS, width))))
  return layers


def efficientnet_b0_variables_from_torch(state_dict: Mapping[str, Any], *,
                                         include_top: bool = False, width: float = 1.0,
                                         num_classes: int = 1000,
                                         source: str = "state_dict") -> dict:
  """torchvision `efficientnet_b0` state_dict -> {'params', 'batch_stats'} of `EfficientNetB0`.

  Without `include_top`, `classifier.*` is dropped. Raises torch_weights.WeightFileError listing
  every missing, unexpected or mis-shaped key (e.g. a B1 file's extra blocks).
  """
  layers = _layers(width, include_top, num_classes)
  ignored = () if include_top else ("classifier.",)
  return backbones.variables_from_layers(
      state_dict, layers, ignored, source)


def load_efficientnet_b0(path: str | os.PathLike, **kwargs) -> dict:
  """Variables of `EfficientNetB0` from a torchvision state_dict file (torch.save)."""
  return efficientnet_b0_variables_from_torch(torch_weights.read_state_dict(path),
                                              source=os.fspath(path), **kwargs)
