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
from colorjax.models import backbones

BACKBONE_NAME = "semantic_backbone"


def scaled_widths(name: str, width: float) -> tuple[int, ...]:
  """Channel widths of backbone `name` at multiplier `width` (1.0 = the torchvision model)."""
  base = backbones.RESNET18_WIDTHS if name == "resnet18" else backbones.VGG_WIDTHS
  return tuple(max(1, int(round(w * width))) for w in base)


def create_semantic_backbone(name: str, width: float = 1.0, dtype: Any = None) -> nn.Module:
  """The backbone `name` ('resnet18' | 'vgg16') at channel multiplier `width`, no classifier."""
  if name not in ("resnet18", "vgg16"):
    raise ValueError(f"unknown semantic backbone {name!r}: use 'resnet18' or 'vgg16'")
  return backbones.create_backbone(name, widths=scaled_widths(name, width), dtype=dtype)


def embedding_size(name: str, width: float = 1.0) -> int:
  """Size C of the backbone's pooled embedding (512 for ResNet-18 and VGG16 at full width)."""
  return scaled_widths(name, width)[-1]


def semantic_backbone_variables(name: str, path: str | os.PathLike) -> dict[str, Any]:
  """Variables of the full-width backbone `name` from a torchvision state_dict file."""
  return backbones.backbone_variables_from_file(name, path)


def _embedding(backbone: nn.Module, l_norm_BHW1, convention: str, trainable: bool):
  l_BHW1 = color.denormalize_l(l_norm_BHW1.astype(jnp.float32), convention)
  rgb = backbones.gray_rgb_from_l(jnp.clip(l_BHW1, 0.0, 100.0))
  embedding_BC, _ = backbone.features(rgb)
  embedding_BC = embedding_BC.astype(jnp.float32)
  return embedding_BC if trainable else jax.lax.stop_gradient(embedding_BC)


class SemanticGenerator(nn.Module):
  """A generator with `semantic_BC` input, fed by a backbone on its gray input (see module doc).

  Attributes:
    generator: takes `(l_norm_BHW1, train, semantic_BC=)`, e.g. a
      `UNetGenerator(semantic_channels=C)`.
    semantic_backbone: `create_semantic_backbone(...)` with embedding size C.
    convention: the L normalisation of the input ('eccv16' | 'pix2pix').
    trainable: False cuts the embedding from the gradient.
  """
  generator: nn.Module
  semantic_backbone: nn.Module
  convention: str = "pix2pix"
  trainable: bool = False

  @nn.compact
  def __call__(self, l_norm_BHW1, train: bool):
    embedding_BC = _embedding(self.semantic_backbone, l_norm_BHW1, self.convention,
                              self.trainable)
    return self.generator(l_norm_BHW1, train, semantic_BC=embedding_BC)


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

  @nn.compact
  def __call__(self, x_BHWC, train: bool):
    embedding_BC = _embedding(self.semantic_backbone, x_BHWC[..., :1], self.convention,
                              self.trainable)
    return self.discriminator(x_BHWC, train, semantic_BC=embedding_BC)
