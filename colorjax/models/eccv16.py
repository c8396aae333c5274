"""The ECCV16 colorization network of Zhang, Isola & Efros, "Colorful Image Colorization" (2016).

A Flax reproduction of the public release (the `eccv16` generator of richzhang/colorization),
layer for layer, so that the official PyTorch weights load into it and give the same logits:

  block   3x3 convs (+ReLU)   channels   stride of last conv   dilation   then
  1       2                   64         2                     1          BatchNorm
  2       2                   128        2                     1          BatchNorm
  3       3                   256        2                     1          BatchNorm
  4       3                   512        1                     1          BatchNorm
  5, 6    3                   512        1                     2          BatchNorm
  7       3                   512        1                     1          BatchNorm
  8       4x4 stride-2 transposed conv to 256 + ReLU, two 3x3 convs 256 + ReLU,
          1x1 conv to 313 logits

The output is one logit per ab bin of `colorjax.color.AB_BINS` (same order as the release) at
1/4 of the input resolution. Decoding logits to ab lives in `colorjax.color`.

Usage::

  model = create_eccv16()
  variables = model.init(rng, l_norm_BHW1, train=False)        # or load_torch_eccv16(path)
  logits_BhwQ = model.apply(variables, l_norm_BHW1, train=False)
  ab_Bhw2 = color.decode_annealed_mean(logits_BhwQ, temperature=0.38)
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorjax import color
from colorjax import torch_weights
from colorjax.models import backbones
from colorjax.ops import conv as conv_ops

# (base channels, number of 3x3 convs, stride of the last conv, dilation) of blocks 1-7.
_BLOCKS = (
    (64, 2, 2, 1),
    (128, 2, 2, 1),
    (256, 3, 2, 1),
    (512, 3, 1, 1),
    (512, 3, 1, 2),
    (512, 3, 1, 2),
    (512, 3, 1, 1),
)
_BLOCK8_CHANNELS = 256
# PyTorch BatchNorm2d defaults: eps=1e-5 and momentum 0.1 on the new statistics, which is Flax's
# momentum 0.9 on the running average.
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9
_AB_TABLE_TOLERANCE = 1e-3


def _ab_bins_kernel_init(key, shape, dtype=jnp.float32):
  del key  # deterministic: the release's decode layer holds the bin centres
  kernel_11Q2 = (color.AB_BINS / color.AB_SCALE)[None, None]
  if tuple(shape) != kernel_11Q2.shape:
    raise ValueError(f"model_out kernel must have shape {kernel_11Q2.shape}, got {tuple(shape)}")
  return jnp.asarray(kernel_11Q2, dtype)


class ECCV16(nn.Module):
  """The ECCV16 generator: ECCV16-normalised L -> 313 ab-bin logits at 1/4 resolution.

  Call as `model.apply(variables, l_norm_BHW1, train)`, with `mutable=['batch_stats']` when
  `train` is True (BatchNorm then uses and updates batch statistics; in eval it uses the running
  ones). One difference from PyTorch in training: Flax's running variance averages the biased
  batch variance, PyTorch's the unbiased one.

  Parameters: at width 1 there are exactly 32,236,011 of them, counting every conv kernel and
  bias (all convs have a bias, as in the release, including the transposed conv and the 1x1 conv
  to 313), BatchNorm scale and bias (2 x 2,496), and the release's `model_out` decode layer, a
  1x1 conv 313 -> 2 without bias (626 weights) that holds `AB_BINS / 110`. BatchNorm running
  means and variances (another 4,992 numbers) are state in `batch_stats`, not parameters.
  Without `model_out` the count is 32,235,385. `model_out` is never used by `__call__`; it is
  created at init so that it is counted, imported from and checked against the official weights,
  and saved; training freezes it by its name, and decoding is `colorjax.color`'s job.

  Attributes:
    width: channel multiplier of every hidden layer (1.0 is the release; 1/16 is a tiny test
      model). The 313 logits and the 2 ab outputs do not scale.
    dtype: computation dtype (e.g. jnp.bfloat16 for mixed precision); logits are float32.
    param_dtype: dtype of the parameters.
    conv_impl: how convs are computed (`colorjax.ops.conv.CONV_IMPLS`; 'auto' = the fastest
      for the backend). Values and parameters do not depend on it.
    remat: recompute each block's activations in the backward pass instead of keeping them
      (`nn.remat` per block): less memory for larger batches, ~1/3 more compute.
  """
  width: float = 1.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, l_norm_BHW1: jax.Array, train: bool) -> jax.Array:
    """ECCV16-normalised L `(L - 50) / 100` (B, H, W, 1) -> logits (B, h, w, 313), float32.

    h = 2 * ceil(H / 8) (H / 4 when H is a multiple of 8), likewise w.
    """
    if l_norm_BHW1.ndim != 4 or l_norm_BHW1.shape[-1] != 1:
      raise ValueError(f"ECCV16 takes normalised L of shape (B, H, W, 1), got "
                       f"{l_norm_BHW1.shape}")
    if not self.width > 0:
      raise ValueError(f"ECCV16 width must be positive, got {self.width}")

    impl = conv_ops.resolve_conv_impl(self.conv_impl)

    def conv(features, name, stride=1, dilation=1):
      # Explicit padding as in torch: 'SAME' would pad stride-2 convs on one side only.
      return conv_ops.Conv(features, (3, 3), strides=stride,
                           padding=((dilation, dilation),) * 2, kernel_dilation=dilation,
                           dtype=self.dtype, param_dtype=self.param_dtype, impl=impl, name=name)

    def block(module, x, index):
      del module  # the layers are created in (and named under) this module's scope
      base, n_convs, last_stride, dilation = _BLOCKS[index - 1]
      features = backbones.scaled_channels(base, self.width)
      for i in range(1, n_convs + 1):
        stride = last_stride if i == n_convs else 1
        x = nn.relu(conv(features, f"conv{index}_{i}", stride, dilation)(x))
      return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM,
                          epsilon=_BN_EPSILON, dtype=self.dtype, param_dtype=self.param_dtype,
                          name=f"bn{index}")(x)

    def block8(module, x):
      del module
      features = backbones.scaled_channels(_BLOCK8_CHANNELS, self.width)
      # torch ConvTranspose2d(k=4, s=2, p=1) is a conv over the 2x-dilated input padded by
      # k - 1 - p = 2 on each side, with the spatially flipped, channel-swapped kernel.
      x = conv_ops.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                 transpose_kernel=True, dtype=self.dtype,
                                 param_dtype=self.param_dtype, impl=impl, name="conv8_1")(x)
      x = nn.relu(x)
      x = nn.relu(conv(features, "conv8_2")(x))
      return nn.relu(conv(features, "conv8_3")(x))

    # Parameter names do not change with remat: the blocks are functions of this module.
    maybe_remat = nn.remat if self.remat else (lambda fn: fn)
    x = l_norm_BHW1
    for index in range(1, len(_BLOCKS) + 1):
      x = maybe_remat(functools.partial(block, index=index))(self, x)
    x = maybe_remat(block8)(self, x)
    logits = nn.Conv(color.Q, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                     name="conv8_313")(x)

    if self.is_initializing():
      ab_decoder = nn.Conv(2, (1, 1), use_bias=False, kernel_init=_ab_bins_kernel_init,
                           dtype=self.dtype, param_dtype=self.param_dtype, name="model_out")
      ab_decoder(jnp.zeros((1, 1, 1, color.Q), self.dtype))
    return logits.astype(jnp.float32)


def create_eccv16(width: float = 1.0, dtype: Any = jnp.float32, conv_impl: str = "auto",
                  remat: bool = False) -> ECCV16:
  """The ECCV16 network at a channel `width` multiplier, computing in `dtype` (params float32)."""
  return ECCV16(width=width, dtype=dtype, conv_impl=conv_impl, remat=remat)


# ------------------------------------------------------------------------------------------------
# Import of the official PyTorch weights
# ------------------------------------------------------------------------------------------------


def _torch_layout(width: float) -> list[tuple[str, str, str, tuple[int, ...]]]:
  """(torch prefix, Flax module name, kind, torch weight shape) of every layer of the release.

  The release builds each block as an nn.Sequential of [conv, ReLU, conv, ReLU, ..., BatchNorm],
  so convs sit at even indices and the BatchNorm at index 2 * n_convs; block 8 is
  [convT, ReLU, conv, ReLU, conv, ReLU, conv313] -> indices 0, 2, 4, 6.
  """
  layout = []
  in_ch = 1
  for block, (base, n_convs, _, _) in enumerate(_BLOCKS, start=1):
    out_ch = backbones.scaled_channels(base, width)
    for i in range(n_convs):
      layout.append((f"model{block}.{2 * i}", f"conv{block}_{i + 1}", "conv",
                     (out_ch, in_ch, 3, 3)))
      in_ch = out_ch
    layout.append((f"model{block}.{2 * n_convs}", f"bn{block}", "bn", (out_ch,)))
  ch8 = backbones.scaled_channels(_BLOCK8_CHANNELS, width)
  layout += [
      ("model8.0", "conv8_1", "conv_transpose", (in_ch, ch8, 4, 4)),
      ("model8.2", "conv8_2", "conv", (ch8, ch8, 3, 3)),
      ("model8.4", "conv8_3", "conv", (ch8, ch8, 3, 3)),
      ("model8.6", "conv8_313", "conv", (color.Q, ch8, 1, 1)),
  ]
  return layout


def torch_state_dict_shapes(width: float = 1.0) -> dict[str, tuple[int, ...]]:
  """{key: shape} of the release's state_dict at `width` (without `num_batches_tracked`)."""
  shapes = {}
  for prefix, _, kind, shape in _torch_layout(width):
    if kind == "bn":
      for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = shape
    else:
      shapes[f"{prefix}.weight"] = shape
      shapes[f"{prefix}.bias"] = (shape[1] if kind == "conv_transpose" else shape[0],)
  shapes["model_out.weight"] = (2, color.Q, 1, 1)
  return shapes


def variables_from_torch(state_dict: Mapping[str, np.ndarray], width: float = 1.0,
                         source: str = "state_dict") -> dict[str, Any]:
  """Flax variables {'params', 'batch_stats'} of `ECCV16(width)` from the release's state_dict.

  `num_batches_tracked` entries are ignored. The release's `model_out.weight` must equal
  `AB_BINS / 110` (to 1e-3 after scaling by 110): it is the table the 313 logits are decoded
  with, so a different table means logits in another bin order.

  Raises:
    WeightFileError: naming `source`, with every missing/unexpected key and shape mismatch, or
      the first bins where the ab table differs.
  """
  state_dict = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
  torch_weights.check_state_dict(state_dict, torch_state_dict_shapes(width), source=source)

  table = np.asarray(state_dict["model_out.weight"], np.float64)[:, :, 0, 0].T * color.AB_SCALE
  error = np.abs(table - color.AB_BINS)
  if not error.max() <= _AB_TABLE_TOLERANCE:
    bad = np.flatnonzero(error.max(axis=1) > _AB_TABLE_TOLERANCE)
    examples = ", ".join(f"bin {i}: {table[i].round(3).tolist()} vs {color.AB_BINS[i].tolist()}"
                         for i in bad[:3])
    raise torch_weights.WeightFileError(
        f"{source}: model_out.weight * 110 is not the ECCV16 ab bin table in the official order "
        f"({len(bad)} of {color.Q} bins differ, e.g. {examples})")

  # device_put, not jnp.asarray: the latter compiles a program per array shape.
  f32 = lambda a: jax.device_put(np.asarray(a, np.float32))
  params, batch_stats = {}, {}
  for prefix, name, kind, _ in _torch_layout(width):
    if kind == "bn":
      params[name] = {"scale": f32(state_dict[f"{prefix}.weight"]),
                      "bias": f32(state_dict[f"{prefix}.bias"])}
      batch_stats[name] = {"mean": f32(state_dict[f"{prefix}.running_mean"]),
                           "var": f32(state_dict[f"{prefix}.running_var"])}
      continue
    to_kernel = (torch_weights.conv_transpose_kernel if kind == "conv_transpose"
                 else torch_weights.conv_kernel)
    params[name] = {"kernel": f32(to_kernel(state_dict[f"{prefix}.weight"])),
                    "bias": f32(state_dict[f"{prefix}.bias"])}
  params["model_out"] = {"kernel": f32(torch_weights.conv_kernel(state_dict["model_out.weight"]))}
  return {"params": params, "batch_stats": batch_stats}


def load_torch_eccv16(path: str | os.PathLike, width: float = 1.0) -> dict[str, Any]:
  """Variables of `ECCV16(width)` from an official PyTorch ECCV16 weight file (no torch needed).

  E.g. the release's `colorization_release_v2-9b330a0b.pth`. Raises WeightFileError naming the
  file when it is unreadable or not the ECCV16 state_dict.
  """
  return variables_from_torch(torch_weights.read_state_dict(path), width, source=os.fspath(path))
