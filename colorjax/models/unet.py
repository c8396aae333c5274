"""The pix2pix U-Net generator (Isola et al., CVPR 2017) and the seeds' variants of it.

`UNetGenerator` maps normalised lightness `l_norm_BHW1` to `out_BHWC` in [-1, 1] (tanh): ab / 110 by
default, or RGB for the seed 003 'U-Net RGB' head. One module covers every variant through its
fields; each variant is a config, not a fork:

  * pix2pix `unet_256` / `unet_128` / `unet_64`: `num_downs=num_downs_for_size(size)`, ngf=64,
    dropout in the decoder. 54,409,858 parameters at 256 px with 1 input and 2 output channels.
  * plain encoder-decoder CNN baseline (seed 003): `skip_connections=False`.
  * RGB head (seed 003): `out_channels=3` (tanh; map to [0, 1] with (x + 1) / 2).
  * seed 002 'Model 2': `attention=(levels...)`, `multiscale_inputs=True`, `semantic_channels=512`
    with a ResNet-18 embedding (see `backbones.py`).
  * seed 001 fusion: `semantic_channels=` the size of a VGG16 / other backbone embedding.

Layout (level i = 0 .. num_downs-1; channels ch_i = ngf * min(2**i, 8), so 64-128-256-512-512...):

  encoder  e_0 = Conv(x)                          (outermost: no activation before, no norm)
           e_i = Conv(LeakyReLU_0.2(e_{i-1}))     then BatchNorm, except the innermost level
  decoder  d_{n-1} = BN(ConvT(ReLU(e_{n-1})))     (innermost)
           d_i = BN(ConvT(ReLU([e_i, d_{i+1}])))  + Dropout(0.5) for 4 <= i <= n-2
           out = tanh(ConvT(ReLU([e_0, d_1])))    (outermost; the only convolution with a bias)

Convs are 4x4 stride 2 padding 1; transposed convs are exactly torch.nn.ConvTranspose2d(k=4, s=2,
p=1). Every convolution is bias-free except the outermost transposed one: the pix2pix rule with
BatchNorm (`use_bias = norm is InstanceNorm`, and the outermost up-convolution keeps torch's default
bias). Note the innermost down-convolution has no bias although no norm follows it; that is what
gives the published parameter count. Dropout sits in the three 512-channel decoder blocks next to
the innermost one at 256 px (`num_downs - 5` blocks in general, as in pix2pix). Initialisation is
pix2pix's: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02), biases 0.

The skip concatenation order is [encoder feature, decoder feature], as in pix2pix.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from colorjax.ops import conv as conv_ops

Dtype = Any
UpsampleMethod = Literal["subpixel", "dilated"]

PIX2PIX_INIT = nn.initializers.normal(stddev=0.02)


def pix2pix_scale_init(key, shape, dtype=jnp.float32):
  """BatchNorm scale ~ N(1, 0.02), as pix2pix's `init_weights`."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def num_downs_for_size(size: int) -> int:
  """The pix2pix U-Net depth for a square `size`: 256 -> 8 (unet_256), 128 -> 7, 64 -> 6.

  The depth takes the image down to a 1x1 bottleneck, so `size` must be a power of two >= 16.
  """
  if size < 16 or size & (size - 1):
    raise ValueError(f"U-Net image size must be a power of two >= 16, got {size}")
  return int(math.log2(size))


def unet_channels(ngf: int, num_downs: int) -> list[int]:
  """Channels of encoder level i: ngf * min(2**i, 8) (64, 128, 256, 512, 512, ... for ngf=64)."""
  return [ngf * min(2**i, 8) for i in range(num_downs)]


def space_to_depth(x_BHWC, block: int):
  """(B, H*b, W*b, C) -> (B, H, W, b*b*C), channels ordered (row offset, column offset, C)."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // block, block, w // block, block, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // block, w // block, block * block * c)


# Sub-pixel taps of a 4-tap, stride-2, padding-1 transposed convolution: output phase r (even or
# odd output index) reads the 1-padded input at offsets d = 0, 1 with kernel tap _PHASE_TAPS[r][d].
_PHASE_TAPS = np.array([[3, 1], [2, 0]])


class ConvTranspose4x4Stride2(nn.Module):
  """Exactly torch.nn.ConvTranspose2d(kernel_size=4, stride=2, padding=1): (B,H,W,I) -> (B,2H,2W,O).

  `kernel` has shape (4, 4, Cin, features) with kernel[ky, kx, i, o] = torch_weight[i, o, ky, kx].

  method 'subpixel' (default) computes the four output phases as one 2x2 convolution with 4*features
  outputs over the 1-padded input and interleaves them; 'dilated' is the textbook form (a 4x4
  convolution of the 2x-dilated, 2-padded input with the flipped kernel). Both give the same values;
  the sub-pixel form has a far cheaper kernel gradient on XLA:CPU and no zero-stuffed input.
  With `impl` other than 'xla' (`colorjax.ops.conv.CONV_IMPLS`), 'subpixel' computes each phase
  by `colorjax.ops.conv.conv_transpose2d` (im2col matmuls on CPU).
  """
  features: int
  use_bias: bool = False
  method: UpsampleMethod = "subpixel"
  impl: str = "xla"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = PIX2PIX_INIT

  @nn.compact
  def __call__(self, x_BHWC):
    in_features = x_BHWC.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (4, 4, in_features, self.features),
                        self.param_dtype)
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x_BHWC, kernel, bias = nn.dtypes.promote_dtype(x_BHWC, kernel, bias, dtype=self.dtype)
    impl = conv_ops.resolve_conv_impl(self.impl)
    if self.method == "subpixel" and impl != "xla":
      # torch's transposed conv is lax.conv_transpose of the flipped kernel with padding k-1-p.
      y = conv_ops.conv_transpose2d(x_BHWC, kernel, strides=(2, 2), padding=((2, 2), (2, 2)),
                                    flip_kernel=True, impl=impl)
    elif self.method == "subpixel":
      y = _conv_transpose_subpixel(x_BHWC, kernel)
    elif self.method == "dilated":
      y = jax.lax.conv_general_dilated(
          x_BHWC, kernel[::-1, ::-1], window_strides=(1, 1), padding=((2, 2), (2, 2)),
          lhs_dilation=(2, 2), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    else:
      raise ValueError(f"unknown transposed-conv method {self.method!r}: "
                       "use 'subpixel' or 'dilated'")
    if bias is not None:
      y = y + bias
    return y


def _conv_transpose_subpixel(x_BHWC, kernel_44IO):
  b, h, w, _ = x_BHWC.shape
  c_out = kernel_44IO.shape[-1]
  # (phase_y, tap_y, phase_x, tap_x, I, O) -> (tap_y, tap_x, I, phase_y * phase_x * O)
  phase_kernel = kernel_44IO[_PHASE_TAPS][:, :, _PHASE_TAPS]
  phase_kernel = phase_kernel.transpose(1, 3, 4, 0, 2, 5).reshape(2, 2, -1, 4 * c_out)
  padded = jnp.pad(x_BHWC, ((0, 0), (1, 1), (1, 1), (0, 0)))
  y = jax.lax.conv_general_dilated(padded, phase_kernel, window_strides=(1, 1), padding="VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y = y.reshape(b, h + 1, w + 1, 2, 2, c_out)
  # Output row 2m + r comes from window m + r of phase r.
  rows = [jnp.stack([y[:, ry:ry + h, rx:rx + w, ry, rx] for rx in (0, 1)], axis=3)
          for ry in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, c_out)


def _batch_norm(train: bool, dtype, param_dtype, name=None):
  # torch BatchNorm2d defaults: momentum 0.1 (flax 0.9), eps 1e-5.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      param_dtype=param_dtype, scale_init=pix2pix_scale_init, name=name)


class DownBlock(nn.Module):
  """One encoder level: [LeakyReLU(0.2)] -> Conv 4x4/2 (no bias) -> [BatchNorm].

  `extra_BhwE`, when given, is concatenated after the activation (multiscale inputs).
  `dropout_rate` > 0 adds Dropout after the BatchNorm (report 001's model 1).
  """
  features: int
  pre_activation: bool = True
  norm: bool = True
  dropout_rate: float = 0.0
  conv_impl: str = "xla"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool, extra_BhwE=None):
    if self.pre_activation:
      x_BHWC = nn.leaky_relu(x_BHWC, negative_slope=0.2)
    if extra_BhwE is not None:
      x_BHWC = jnp.concatenate([x_BHWC, extra_BhwE.astype(x_BHWC.dtype)], axis=-1)
    x = conv_ops.Conv(self.features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                      use_bias=False, kernel_init=PIX2PIX_INIT, dtype=self.dtype,
                      param_dtype=self.param_dtype, impl=self.conv_impl, name="conv")(x_BHWC)
    if self.norm:
      x = _batch_norm(train, self.dtype, self.param_dtype, name="norm")(x)
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


class UpBlock(nn.Module):
  """One decoder level: ReLU -> ConvTranspose 4x4/2 -> BatchNorm [-> Dropout].

  The outermost block (`outermost=True`) has a bias and neither norm nor dropout; the caller applies
  the output activation.
  """
  features: int
  outermost: bool = False
  dropout_rate: float = 0.0
  method: UpsampleMethod = "subpixel"
  conv_impl: str = "xla"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC, train: bool):
    x = nn.relu(x_BHWC)
    x = ConvTranspose4x4Stride2(self.features, use_bias=self.outermost, method=self.method,
                                impl=self.conv_impl, dtype=self.dtype,
                                param_dtype=self.param_dtype, name="conv")(x)
    if not self.outermost:
      x = _batch_norm(train, self.dtype, self.param_dtype, name="norm")(x)
      if self.dropout_rate > 0:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


class SelfAttention(nn.Module):
  """SAGAN self-attention (Zhang et al. 2019): x + gamma * Conv1x1(softmax(q k^T) v), gamma init 0.

  Queries and keys have C/8 channels, values C/2 (as in SAGAN's released code). With `pool_kv`,
  keys and values are 2x2 max-pooled (also as released), which cuts the attention matrix by 4; the
  pooling is skipped on maps with an odd side. Logits and softmax are computed in float32.
  """
  pool_kv: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BHWC):
    b, h, w, c = x_BHWC.shape
    conv = lambda features, name: nn.Conv(features, (1, 1), use_bias=False,
                                          kernel_init=PIX2PIX_INIT, dtype=self.dtype,
                                          param_dtype=self.param_dtype, name=name)
    query = conv(max(c // 8, 1), "query")(x_BHWC)
    key = conv(max(c // 8, 1), "key")(x_BHWC)
    value = conv(max(c // 2, 1), "value")(x_BHWC)
    if self.pool_kv and h % 2 == 0 and w % 2 == 0:
      key = nn.max_pool(key, (2, 2), strides=(2, 2))
      value = nn.max_pool(value, (2, 2), strides=(2, 2))
    query = query.reshape(b, h * w, -1)
    key = key.reshape(b, -1, key.shape[-1])
    value = value.reshape(b, -1, value.shape[-1])
    logits = jnp.einsum("bqc,bkc->bqk", query.astype(jnp.float32), key.astype(jnp.float32))
    weights = jax.nn.softmax(logits, axis=-1).astype(value.dtype)
    attended = jnp.einsum("bqk,bkc->bqc", weights, value).reshape(b, h, w, -1)
    out = conv(c, "out")(attended)
    gamma = self.param("gamma", nn.initializers.zeros, (), self.param_dtype)
    return x_BHWC + gamma.astype(out.dtype) * out


_OUTPUT_ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "none": lambda x: x}


def check_semantic_input(model_name: str, semantic_channels: int, semantic_BC,
                         batch_size: int) -> None:
  """Checks that `semantic_BC` is given exactly when the model has `semantic_channels`, with
  shape (batch_size, semantic_channels)."""
  if semantic_channels and semantic_BC is None:
    raise ValueError(f"{model_name} has semantic_channels={semantic_channels} but no "
                     "semantic_BC was passed")
  if not semantic_channels and semantic_BC is not None:
    raise ValueError(f"{model_name} got semantic_BC but semantic_channels=0")
  if semantic_BC is not None and semantic_BC.shape != (batch_size, semantic_channels):
    raise ValueError(f"semantic_BC must have shape (batch, {semantic_channels}), "
                     f"got {semantic_BC.shape}")


class UNetGenerator(nn.Module):
  """pix2pix U-Net: `apply(variables, l_norm_BHW1, train, semantic_BC=None, rngs=...) -> out_BHWC`.

  Height and width must be multiples of 2**num_downs. With `train=True`, BatchNorm uses batch
  statistics (call with `mutable=['batch_stats']`) and dropout needs `rngs={'dropout': key}`; with
  `train=False` it uses running statistics and dropout is off.

  Attributes:
    out_channels: 2 = ab (default), 3 = RGB head.
    ngf: channels of the first encoder level (64 in pix2pix; 8 makes a tiny test model).
    num_downs: encoder depth; `num_downs_for_size(256) == 8` gives pix2pix unet_256.
    use_dropout: dropout 0.5 in decoder levels 4 .. num_downs-2 (pix2pix's `use_dropout`).
    encoder_dropout: dropout rate after each encoder BatchNorm (levels 1 .. num_downs-2); 0 = off.
    skip_connections: False gives the plain encoder-decoder baseline (no concatenation).
    attention: decoder levels that get a `SelfAttention` on their output d_i (H / 2**i, before the
      skip concatenation), each in 1 .. num_downs-1; e.g. (3,) is 32x32 at 256 px.
    multiscale_inputs: also feed L at double and half scale (seed 002). The double-scale L
      (bilinear 2x) is folded into the original grid by a 2x2 space-to-depth and concatenated
      with L at the input of level 0 (1 + 4 input channels); the half-scale L (antialiased
      bilinear) is concatenated with the activated e_0 at the input of level 1, whose grid it
      matches. No extra layers: the first two convolutions just see more input channels.
    semantic_channels: size C of a per-image embedding `semantic_BC` (e.g. 512 from ResNet-18);
      0 = off. The embedding is broadcast over the bottleneck grid, concatenated with e_{n-1}
      and fused back to ch_{n-1} channels by a 1x1 convolution (with bias) that the innermost
      decoder block's ReLU follows (the fusion of seed 001).
    A `semantic_map_BHWC` passed to `__call__` (a backbone's feature map at the input's size,
      seed 002's "concatenated with the grayscale input") is concatenated with the input of
      level 0; the first convolution just sees more channels.
    output_activation: 'tanh' (pix2pix), 'sigmoid' or 'none'.
    upsample_method: see `ConvTranspose4x4Stride2`.
    conv_impl: how the 4x4 convs and transposed convs are computed (`colorjax.ops.conv`;
      'auto' = the fastest for the backend, 'xla' = XLA's own, the reference).
    dtype: computation dtype (jnp.bfloat16 for mixed precision); param_dtype: parameter dtype.
  """
  out_channels: int = 2
  ngf: int = 64
  num_downs: int = 8
  use_dropout: bool = True
  encoder_dropout: float = 0.0
  skip_connections: bool = True
  attention: Sequence[int] = ()
  multiscale_inputs: bool = False
  semantic_channels: int = 0
  output_activation: Literal["tanh", "sigmoid", "none"] = "tanh"
  upsample_method: UpsampleMethod = "subpixel"
  conv_impl: str = "xla"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _check(self, l_norm_BHW1, semantic_BC):
    n = self.num_downs
    if n < 2:
      raise ValueError(f"UNetGenerator.num_downs must be >= 2, got {n}")
    if self.output_activation not in _OUTPUT_ACTIVATIONS:
      raise ValueError(f"unknown UNetGenerator.output_activation {self.output_activation!r}: "
                       f"use one of {sorted(_OUTPUT_ACTIVATIONS)}")
    bad_levels = [i for i in self.attention if not 1 <= i <= n - 1]
    if bad_levels:
      raise ValueError(f"UNetGenerator.attention levels must be in 1..{n - 1} (num_downs={n}), "
                       f"got {tuple(self.attention)}")
    if l_norm_BHW1.ndim != 4:
      raise ValueError(f"UNetGenerator expects a (B, H, W, C) input, got shape {l_norm_BHW1.shape}")
    _, h, w, _ = l_norm_BHW1.shape
    if h % 2**n or w % 2**n:
      raise ValueError(f"UNetGenerator with num_downs={n} needs height and width divisible by "
                       f"{2**n}, got {h}x{w}")
    check_semantic_input("UNetGenerator", self.semantic_channels, semantic_BC,
                         l_norm_BHW1.shape[0])

  @nn.compact
  def __call__(self, l_norm_BHW1, train: bool, semantic_BC=None, semantic_map_BHWC=None):
    self._check(l_norm_BHW1, semantic_BC)
    n = self.num_downs
    channels = unet_channels(self.ngf, n)
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    impl = conv_ops.resolve_conv_impl(self.conv_impl)
    b, h, w, _ = l_norm_BHW1.shape

    x = l_norm_BHW1
    half_scale = None
    if self.multiscale_inputs:
      double = jax.image.resize(l_norm_BHW1, (b, 2 * h, 2 * w, l_norm_BHW1.shape[-1]), "bilinear")
      x = jnp.concatenate([l_norm_BHW1, space_to_depth(double, 2)], axis=-1)
      half_scale = jax.image.resize(l_norm_BHW1, (b, h // 2, w // 2, l_norm_BHW1.shape[-1]),
                                    "bilinear", antialias=True)
    if semantic_map_BHWC is not None:
      if semantic_map_BHWC.shape[:3] != (b, h, w):
        raise ValueError(f"semantic_map_BHWC must have shape ({b}, {h}, {w}, C), got "
                         f"{semantic_map_BHWC.shape}")
      x = jnp.concatenate([x, semantic_map_BHWC.astype(x.dtype)], axis=-1)

    skips = []
    for i in range(n):
      x = DownBlock(channels[i], pre_activation=i > 0, norm=0 < i < n - 1,
                    dropout_rate=self.encoder_dropout, conv_impl=impl,
                    name=f"down_{i}", **common)(x, train, extra_BhwE=half_scale if i == 1 else None)
      skips.append(x)

    if self.semantic_channels:
      semantic = jnp.broadcast_to(semantic_BC[:, None, None, :].astype(x.dtype),
                                  x.shape[:3] + (self.semantic_channels,))
      x = nn.Conv(channels[-1], (1, 1), kernel_init=PIX2PIX_INIT, name="semantic_fusion",
                  **common)(jnp.concatenate([x, semantic], axis=-1))

    for i in reversed(range(n)):
      if i < n - 1 and self.skip_connections:
        x = jnp.concatenate([skips[i], x], axis=-1)
      outermost = i == 0
      dropout = 0.5 if self.use_dropout and 4 <= i <= n - 2 else 0.0
      x = UpBlock(self.out_channels if outermost else channels[i - 1], outermost=outermost,
                  dropout_rate=dropout, method=self.upsample_method, conv_impl=impl,
                  name=f"up_{i}", **common)(x, train)
      if i in self.attention:
        x = SelfAttention(name=f"attention_{i}", **common)(x)

    return _OUTPUT_ACTIVATIONS[self.output_activation](x)
