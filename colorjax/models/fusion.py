"""Report 001's encoder-decoders around a frozen classifier: the fusion network of its models 3 and
4, and the decoder on a backbone's feature map of its model 2.

`FusionEncoderDecoder` (models 3 and 4: InceptionV3 / EfficientNet-B0 embeddings):

  encoder  3x3 convs + ReLU, `encoder_features` wide (64, 128, 128, 256, 256, 512, 512, 256),
           stride 2 where `encoder_strides` says (the 1st, 3rd and 5th: H/8 at the end)
  fusion   the embedding `semantic_BC` repeated over the H/8 grid, concatenated with the encoder's
           features, a 1x1 conv to `fusion_features` (256) + ReLU
  decoder  3x3 convs + ReLU, `decoder_features` wide (128, 64, 32, 16), each followed by a x2
           bilinear upsampling where `decoder_upsample` says (after the 128 and the 64), then a
           3x3 conv to `out_channels` (2: ab) with tanh, bilinearly upsampled to the input size

`FeatureMapDecoder` (model 2: VGG16's layers "up to the 19th", i.e. through block5_pool):

  the backbone's `feature` map (VGG16 `pool5`: 512 channels at H/32) of the gray input, frozen,
  then 3x3 convs + ReLU `decoder_features` wide (256, 128, 64, 32, 16), a x2 bilinear upsampling
  after each where `decoder_upsample` says, a 3x3 conv to `out_channels` with tanh, bilinearly
  upsampled to the input size.

Convs pad 1 on each side (symmetric) and have biases; no normalisation, as in the report's Keras
layers. Input: normalised lightness `l_norm_BHW1`; output: tanh in [-1, 1] (ab / 110, or RGB).
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def _conv3x3(features: int, name: str, dtype, strides: int = 1) -> nn.Conv:
  return nn.Conv(features, (3, 3), strides=(strides, strides), padding=((1, 1), (1, 1)),
                 dtype=dtype, name=name)


def upsample_bilinear(x_BHWC, height: int, width: int):
  """Bilinear resize with half-pixel centres (torch's align_corners=False, Keras' bilinear)."""
  return jax.image.resize(x_BHWC, x_BHWC.shape[:1] + (height, width) + x_BHWC.shape[3:],
                          method="bilinear", antialias=False)


def _decode(x, decoder_features, decoder_upsample, out_channels, out_hw, dtype):
  for i, (features, up) in enumerate(zip(decoder_features, decoder_upsample)):
    x = nn.relu(_conv3x3(features, f"decoder_{i}", dtype)(x))
    if up:
      x = upsample_bilinear(x, 2 * x.shape[1], 2 * x.shape[2])
  x = jnp.tanh(_conv3x3(out_channels, "decoder_out", dtype)(x).astype(jnp.float32))
  return upsample_bilinear(x, *out_hw)


class FusionEncoderDecoder(nn.Module):
  """`apply(variables, l_norm_BHW1, train, semantic_BC=) -> out_BHWC` (see the module doc)."""
  semantic_channels: int
  encoder_features: Sequence[int] = (64, 128, 128, 256, 256, 512, 512, 256)
  encoder_strides: Sequence[int] = (2, 1, 2, 1, 2, 1, 1, 1)
  fusion_features: int = 256
  decoder_features: Sequence[int] = (128, 64, 32, 16)
  decoder_upsample: Sequence[bool] = (True, True, False, False)
  out_channels: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, l_norm_BHW1, train: bool, semantic_BC=None):
    del train  # no dropout or normalisation
    if semantic_BC is None or semantic_BC.shape != (l_norm_BHW1.shape[0], self.semantic_channels):
      raise ValueError(f"FusionEncoderDecoder needs semantic_BC of shape (batch, "
                       f"{self.semantic_channels}), got "
                       f"{None if semantic_BC is None else semantic_BC.shape}")
    if len(self.encoder_features) != len(self.encoder_strides) or len(
        self.decoder_features) != len(self.decoder_upsample):
      raise ValueError("FusionEncoderDecoder: encoder_features/encoder_strides and "
                       "decoder_features/decoder_upsample must have equal lengths")
    x = l_norm_BHW1.astype(self.dtype or jnp.float32)
    for i, (features, stride) in enumerate(zip(self.encoder_features, self.encoder_strides)):
      x = nn.relu(_conv3x3(features, f"encoder_{i}", self.dtype, stride)(x))
    semantic = jnp.broadcast_to(semantic_BC[:, None, None, :].astype(x.dtype),
                                x.shape[:3] + (self.semantic_channels,))
    x = nn.Conv(self.fusion_features, (1, 1), dtype=self.dtype, name="fusion")(
        jnp.concatenate([x, semantic], axis=-1))
    x = nn.relu(x)
    return _decode(x, self.decoder_features, self.decoder_upsample, self.out_channels,
                   l_norm_BHW1.shape[1:3], self.dtype)


class FeatureMapDecoder(nn.Module):
  """`apply(variables, features_BhwC, out_hw) -> out_BHWC`: the decoder of report 001's model 2
  on a backbone's feature map (see the module doc); `SemanticFeatureDecoder` feeds it."""
  decoder_features: Sequence[int] = (256, 128, 64, 32, 16)
  decoder_upsample: Sequence[bool] = (False, True, True, True, True)
  out_channels: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, features_BhwC, out_hw: tuple[int, int]):
    if len(self.decoder_features) != len(self.decoder_upsample):
      raise ValueError("FeatureMapDecoder: decoder_features and decoder_upsample must have "
                       "equal lengths")
    x = features_BhwC.astype(self.dtype or jnp.float32)
    return _decode(x, self.decoder_features, self.decoder_upsample, self.out_channels,
                   tuple(out_hw), self.dtype)
