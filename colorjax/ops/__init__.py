"""Numerical building blocks that models share: convolutions with selectable lowerings.

`colorjax.ops.conv` holds `Conv` and `ConvTranspose`, drop-in replacements for Flax's `nn.Conv`
and `nn.ConvTranspose` (same parameters) whose `impl` chooses how XLA computes them, and
`resolve_conv_impl`, which turns the config value `model.conv_impl` into an implementation name.
"""
from colorjax.ops.conv import (CONV_IMPLS, Conv, ConvTranspose, conv2d, conv_transpose2d,
                               resolve_conv_impl)

__all__ = ["CONV_IMPLS", "Conv", "ConvTranspose", "conv2d", "conv_transpose2d",
           "resolve_conv_impl"]
