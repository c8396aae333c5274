"""Semantic conditioning: a pretrained classifier's embedding of the gray input fed to G and D.

Seed 002 ('Model 2') feeds ResNet-18 features to the U-Net generator and to the conditional
PatchGAN; seed 001 fuses a VGG16 (or InceptionV3 / EfficientNet-B0) embedding into the bottleneck
of its encoder-decoder. Both are these wrappers around an existing network:

  SemanticGenerator(generator, semantic_backbone, convention, trainable)
      apply(variables, l_norm_BHW1, train) -> the generator's output
  SemanticDiscriminator(discriminator, semantic_backbone, convention, trainable)
      apply(variables, x_BHWC, train) -> patch logits          (x = concat(L, ab), normalised)

Each runs its backbone (`backbones.ResNet18` / `vgg16`, inference mode) on the gray sRGB image of
the input lightness (`backbones.gray_rgb_from_l`, at the input's own size) and passes the pooled
embedding as `semantic_BC` (U-Net: broadcast over the bottleneck and fused by a 1x1 conv;
PatchGAN: projected and concatenated before its last normalised conv). D has its own copy of the
backbone, so G and D stay separate pytrees with separate optimizers.

The backbone's variables live in the wrapper's collections under the name `semantic_backbone`
(`params['semantic_backbone']`, `batch_stats['semantic_backbone']`), so a checkpoint, an exported
model and `checkpoint.load_model` carry them with the generator. With `trainable=False` the
embedding is cut from the gradient (no backward pass through the backbone) and training also
excludes the backbone from the optimizer by that name. The backbone's BatchNorm always uses its
running statistics (torchvision `eval()`), whether trainable or not.

Backbones: 'resnet18', 'vgg16' (`backbones`), 'inception_v3' (torchvision's InceptionV3, the
network of `colorjax.fid` with torchvision's pooling; 2048-d pool3) and 'efficientnet_b0'
(`efficientnet`, 1280-d). `input_size` > 0 resizes the gray image bilinearly to that square
before the backbone (report 001: InceptionV3 sees 299x299, EfficientNet-B0 224x224); 0 keeps the
input's size.

`SemanticFeatureDecoder` (report 001's model 2) decodes the backbone's feature MAP instead of
fusing its pooled vector: `FeatureMapDecoder` on VGG16's pool5.

Weights come from a torchvision state_dict (`semantic_backbone_variables(name, path)`), loaded into
the initial train state; random weights (no file) make the conditioning meaningless and are for
tests only.
"""
from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax import color
from colorjax.models import backbones, efficientnet, inception

BACKBONE_NAME = "semantic_backbone"


BACKBONES = ("resnet18", "vgg16", "inception_v3", "efficientnet_b0")
FEATURE_MAPS = {"vgg16": "pool5", "resnet18": "layer4"}
"""The feature map `SemanticFeatureDecoder` decodes, per backbone (the last one before pooling)."""


def scaled_widths(name: str, width: float) -> tuple[int, ...]:
  """Channel widths of backbone `name` ('resnet18' | 'vgg16') at multiplier `width`."""
  base = backbones.RESNET18_WIDTHS if name == "resnet18" else backbones.VGG_WIDTHS
  return tuple(backbones.scaled_channels(w, width) for w in base)


def create_semantic_backbone(name: str, width: float = 1.0, dtype: Any = None) -> nn.Module:
  """The backbone `name` (one of BACKBONES) at channel multiplier `width`, no classifier.

  InceptionV3 computes in float32.
  """
  if name not in BACKBONES:
    raise ValueError(f"unknown semantic backbone {name!r}: use one of {list(BACKBONES)}")
  if name == "inception_v3":
    return inception.InceptionV3(precision=None, tf_pooling=False, width=width)
  if name == "efficientnet_b0":
    return efficientnet.EfficientNetB0(width=width, dtype=dtype)
  return backbones.create_backbone(name, widths=scaled_widths(name, width), dtype=dtype)


def embedding_size(name: str, width: float = 1.0) -> int:
  """Size C of the backbone's pooled embedding (512 for ResNet-18 and VGG16 at full width,
  2048 for InceptionV3, 1280 for EfficientNet-B0)."""
  if name == "inception_v3":
    return inception.embedding_size(width)
  if name == "efficientnet_b0":
    return efficientnet.embedding_size(width)
  return scaled_widths(name, width)[-1]


def semantic_backbone_variables(name: str, path: str | os.PathLike) -> dict[str, Any]:
  """Variables of the full-width backbone `name` from a torchvision state_dict file."""
  if name == "inception_v3":
    return inception.load_inception(path)
  if name == "efficientnet_b0":
    return efficientnet.load_efficientnet_b0(path)
  return backbones.backbone_variables_from_file(name, path)


def _backbone_features(backbone: nn.Module, l_norm_BHW1, convention: str, trainable: bool,
                       input_size: int = 0):
  """(embedding_BC, activations) of the backbone on the gray sRGB image of the input L."""
  l_BHW1 = color.denormalize_l(l_norm_BHW1.astype(jnp.float32), convention)
  rgb = backbones.gray_rgb_from_l(jnp.clip(l_BHW1, 0.0, 100.0))
  if input_size:
    rgb = jax.image.resize(rgb, (rgb.shape[0], input_size, input_size, 3), method="bilinear")
  embedding_BC, activations = backbone.features(rgb)
  embedding_BC = embedding_BC.astype(jnp.float32)
  if not trainable:
    embedding_BC, activations = jax.lax.stop_gradient((embedding_BC, activations))
  return embedding_BC, activations


def _embedding(backbone: nn.Module, l_norm_BHW1, convention: str, trainable: bool,
               input_size: int = 0):
  return _backbone_features(backbone, l_norm_BHW1, convention, trainable, input_size)[0]


class SemanticGenerator(nn.Module):
  """A generator with `semantic_BC` input, fed by a backbone on its gray input (see module doc).

  Attributes:
    generator: takes `(l_norm_BHW1, train, semantic_BC=)`, e.g. a
      `UNetGenerator(semantic_channels=C)`.
    semantic_backbone: `create_semantic_backbone(...)` with embedding size C.
    convention: the L normalisation of the input ('eccv16' | 'pix2pix').
    trainable: False cuts the embedding from the gradient.
    input_size: the square side the gray image is resized to for the backbone (0: its own).
    fusion: 'bottleneck' passes the pooled embedding as `semantic_BC`; 'input' passes the
      backbone's `feature` map (FEATURE_MAPS), bilinearly upsampled to the input's size, as
      `semantic_map_BHWC`, which a U-Net concatenates with its L input (report 002's model 2:
      features "concatenated with the grayscale input").
    feature: the activation used by 'input' fusion.
  """
  generator: nn.Module
  semantic_backbone: nn.Module
  convention: str = "pix2pix"
  trainable: bool = False
  input_size: int = 0
  fusion: str = "bottleneck"
  feature: str = ""

  @nn.compact
  def __call__(self, l_norm_BHW1, train: bool):
    embedding_BC, activations = _backbone_features(
        self.semantic_backbone, l_norm_BHW1, self.convention, self.trainable, self.input_size)
    if self.fusion == "input":
      b, h, w, _ = l_norm_BHW1.shape
      feature_map = activations[self.feature].astype(jnp.float32)
      feature_map = jax.image.resize(feature_map, (b, h, w, feature_map.shape[-1]),
                                     method="bilinear", antialias=False)
      return self.generator(l_norm_BHW1, train, semantic_map_BHWC=feature_map)
    return self.generator(l_norm_BHW1, train, semantic_BC=embedding_BC)


class SemanticFeatureDecoder(nn.Module):
  """Report 001's model 2: a decoder on the backbone's feature map of the gray input.

  Attributes:
    decoder: a `fusion.FeatureMapDecoder`, called `(features_BhwC, out_hw)`.
    semantic_backbone: `create_semantic_backbone(...)`; its `feature` activation is decoded.
    feature: the activation's name (VGG16: 'pool5', H/32).
    convention, trainable: as `SemanticGenerator`.
  """
  decoder: nn.Module
  semantic_backbone: nn.Module
  feature: str = "pool5"
  convention: str = "pix2pix"
  trainable: bool = False

  @nn.compact
  def __call__(self, l_norm_BHW1, train: bool):
    del train  # the backbone runs in inference mode; the decoder has no dropout or norm
    _, activations = _backbone_features(self.semantic_backbone, l_norm_BHW1, self.convention,
                                        self.trainable)
    return self.decoder(activations[self.feature], l_norm_BHW1.shape[1:3])


class SemanticDiscriminator(nn.Module):
  """A discriminator with `semantic_BC` input, fed by a backbone on the L channel of its input.

  Attributes:
    discriminator: takes `(x_BHWC, train, semantic_BC=)`, e.g. a semantic PatchGAN.
    semantic_backbone, convention, trainable: as `SemanticGenerator`; channel 0 of `x_BHWC` is the
      normalised L.
  """
  discriminator: nn.Module
  semantic_backbone: nn.Module
  convention: str = "pix2pix"
  trainable: bool = False
  input_size: int = 0

  @nn.compact
  def __call__(self, x_BHWC, train: bool):
    embedding_BC = _embedding(self.semantic_backbone, x_BHWC[..., :1], self.convention,
                              self.trainable, self.input_size)
    return self.discriminator(x_BHWC, train, semantic_BC=embedding_BC)
