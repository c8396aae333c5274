"""The pix2pix PatchGAN discriminator (Isola et al., CVPR 2017), with optional semantic input.

`PatchGANDiscriminator` scores overlapping patches of a (lightness, color) pair as real or fake:
`apply(variables, x_BHWC, train, semantic_BC=None) -> logits_BhwC1` (raw logits, no sigmoid), where
`x_BHWC = concat(L, ab)` (3 channels) in the generator's normalisation.

With `n_layers=3`, `ndf=64` it is pix2pix's 70x70 `basic` discriminator, 2,765,633 parameters on
3 input channels (30x30 logits for a 256x256 input):

  Conv4x4/2(ndf, bias) LReLU
  for n in 1 .. n_layers-1: Conv4x4/2(ndf * min(2**n, 8), no bias) BN LReLU
  Conv4x4/1(ndf * min(2**n_layers, 8), no bias) BN LReLU
  Conv4x4/1(1, bias)

All convolutions pad by 1 and LeakyReLU has slope 0.2. More layers give a larger receptive field
(n_layers=4: 142x142, 5: 286x286). `n_layers=0` is pix2pix's 1x1 `pixel` discriminator:
Conv1x1(ndf, bias) LReLU Conv1x1(2 ndf, no bias) BN LReLU Conv1x1(1, no bias).

Semantic conditioning (seed 002's conditional PatchGAN with ResNet-18 features): with
`semantic_channels=C > 0`, a per-image embedding `semantic_BC` is projected by a Dense layer to
`ndf` features, broadcast over the feature grid and concatenated with the input of the last
normalised convolution (the stride-1 one; for the pixel discriminator, the second 1x1 conv).
Conditioning there keeps the full-resolution layers cheap and lets the patch score depend on
what the image shows.

Initialisation is pix2pix's: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), biases 0.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from colorjax.models.unet import PIX2PIX_INIT, check_semantic_input, pix2pix_scale_init
from colorjax.ops import conv as conv_ops

Dtype = Any


class PatchGANDiscriminator(nn.Module):
  """pix2pix NLayerDiscriminator / PixelDiscriminator; see the module docstring.

  With `train=True`, BatchNorm uses batch statistics: call with `mutable=['batch_stats']`.

  Attributes:
    ndf: channels of the first layer (64 in pix2pix; 8 makes a tiny test model).
    n_layers: number of stride-2 convolutions (3 = 70x70 patches); 0 = the 1x1 pixel discriminator.
    semantic_channels: size C of the optional per-image embedding `semantic_BC`; 0 = off.
    conv_impl: how the convs are computed (`colorjax.ops.conv`; 'xla' = XLA's own).
    dtype: computation dtype (jnp.bfloat16 for mixed precision); param_dtype: parameter dtype.
  """
  ndf: int = 64
  n_layers: int = 3
  semantic_channels: int = 0
  conv_impl: str = "xla"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _check(self, x_BHWC, semantic_BC):
    if self.n_layers < 0:
      raise ValueError(f"PatchGANDiscriminator.n_layers must be >= 0, got {self.n_layers}")
    if x_BHWC.ndim != 4:
      raise ValueError(f"PatchGANDiscriminator expects a (B, H, W, C) input, got shape "
                       f"{x_BHWC.shape}")
    min_size = 2**self.n_layers * 3 if self.n_layers else 1
    if min(x_BHWC.shape[1:3]) < min_size:
      raise ValueError(f"PatchGANDiscriminator with n_layers={self.n_layers} needs inputs of at "
                       f"least {min_size}x{min_size}, got {x_BHWC.shape[1]}x{x_BHWC.shape[2]}")
    check_semantic_input("PatchGANDiscriminator", self.semantic_channels, semantic_BC,
                         x_BHWC.shape[0])

  def _conv(self, features, kernel, stride, use_bias, name):
    pad = 1 if kernel == 4 else 0
    return conv_ops.Conv(features, (kernel, kernel), strides=(stride, stride),
                         padding=((pad, pad), (pad, pad)), use_bias=use_bias,
                         kernel_init=PIX2PIX_INIT, dtype=self.dtype, param_dtype=self.param_dtype,
                         impl=self.conv_impl, name=name)

  def _norm(self, train, name):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=self.dtype, param_dtype=self.param_dtype,
                        scale_init=pix2pix_scale_init, name=name)

  def _with_semantic(self, x_BHWC, semantic_BC):
    if semantic_BC is None:
      return x_BHWC
    projected = nn.Dense(self.ndf, kernel_init=PIX2PIX_INIT, dtype=self.dtype,
                         param_dtype=self.param_dtype, name="semantic_projection")(semantic_BC)
    projected = jnp.broadcast_to(projected[:, None, None, :].astype(x_BHWC.dtype),
                                 x_BHWC.shape[:3] + (self.ndf,))
    return jnp.concatenate([x_BHWC, projected], axis=-1)

  @nn.compact
  def __call__(self, x_BHWC, train: bool, semantic_BC=None):
    self._check(x_BHWC, semantic_BC)
    leaky = lambda x: nn.leaky_relu(x, negative_slope=0.2)

    if self.n_layers == 0:
      x = leaky(self._conv(self.ndf, 1, 1, True, "conv_0")(x_BHWC))
      x = self._with_semantic(x, semantic_BC)
      x = leaky(self._norm(train, "norm_1")(self._conv(2 * self.ndf, 1, 1, False, "conv_1")(x)))
      return self._conv(1, 1, 1, False, "conv_2")(x)

    x = leaky(self._conv(self.ndf, 4, 2, True, "conv_0")(x_BHWC))
    for n in range(1, self.n_layers):
      x = self._conv(self.ndf * min(2**n, 8), 4, 2, False, f"conv_{n}")(x)
      x = leaky(self._norm(train, f"norm_{n}")(x))
    n = self.n_layers
    x = self._with_semantic(x, semantic_BC)
    x = self._conv(self.ndf * min(2**n, 8), 4, 1, False, f"conv_{n}")(x)
    x = leaky(self._norm(train, f"norm_{n}")(x))
    return self._conv(1, 4, 1, True, f"conv_{n + 1}")(x)
