"""2-D convolutions with selectable lowerings, as Flax modules that replace `nn.Conv`/`nn.ConvTranspose`.

Why: XLA:CPU lowers some convolutions badly. The kernel gradient of a 4x4 stride-2 transposed
conv (ECCV16's conv8_1, 8x16x16x512 -> 256) runs at ~1 GFLOP/s, 6.5-27 s of a step that
otherwise takes ~3 s; and a 3x3 conv costs 9 multiply-adds per output where Winograd's
F(2x2, 3x3) needs 4. The implementations ('impl'), all giving the values and gradients of 'xla'
to float rounding (tests/conv_test.py):

  'xla'       `lax.conv_general_dilated` / `lax.conv_transpose` (the reference; GPU/TPU).
  'subpixel'  as 'xla', but a strided transposed conv is computed phase by phase: the outputs
              (s*m + r, s*n + c) are a stride-1 conv of the undilated input with the kernel taps
              that reach them, interleaved into the output (no products with the zeros of a
              dilated input; each phase's gradients are ordinary dense convs).
  'im2col'    every conv as one matmul over the kh*kw shifted (strided, dilated) views of the
              padded input, with a custom VJP whose kernel gradient is one matmul
              (patches^T @ dy) and whose input gradient is (dy @ kernel^T) scattered back
              (col2im); 1x1 convs are a plain dot; transposed convs phase by phase (their
              kernel gradients interleaved into one dense array), torch's 4x4 stride-2 one on
              maps of >= 16x16 as one 2x2 conv of the 1-padded input with all four phases'
              outputs, transposed convs with < 32 outputs as col2im(x @ kernel).
  'winograd'  the CPU mix: 3x3 stride-1 convs with >= 16 input channels by F(2x2, 3x3) (Lavin &
              Gray 2016; dilated ones after a space-to-batch split), differentiated by JAX so
              that both gradients are Winograd-shaped batched matmuls too; 4x4 (and larger)
              convs with over 1024 output pixels per image by XLA (fast on large maps); every
              other conv as 'im2col'.
  'auto'      `resolve_conv_impl`: 'winograd' on CPU, 'xla' elsewhere.

Under every impl but 'xla': convs of under 20 MFLOPs and convs with fewer than 32 output
channels keep XLA's conv (negligible time, or im2col's copies cost more than its matmul saves);
kernel taps that only ever read padding are dropped (a 4x4 conv of a 2x2 map is a 2x2 conv);
im2col's forward pass of convs with at most 64 products per output (the first conv on L) is
XLA's conv; transposed convs of a flipped kernel (torch's layout) are computed from the
unflipped one by reversing the order of the views instead. See the comments below.

Measured on a shared 2-core AVX-512 host, ECCV16 train step at 128 px, batch 8, medians of
alternating runs in one process (benchmarks/README.md): 'xla' 23 s/step under load;
'subpixel' 4.1-4.5 s; 'winograd' 2.9-3.8 s; 'im2col' 6.5-7.5 s (its kh*kw x larger patches
cost more in memory traffic and page faults than XLA's own conv loops); a variant keeping XLA's
forward and input gradient with a matmul kernel gradient 6.8-7.8 s; F(4x4, 3x3) Winograd no
faster than F(2x2, 3x3) and twice as slow to compile. The strided convs of 'winograd' cost the
same through im2col as through XLA in ECCV16 (2.95 vs 2.92 s/step). The pix2pix step (U-Net +
PatchGAN, 128 px, batch 4; quiet host, freed memory retained): 0.53 s/step with XLA's convs
(and the U-Net's own sub-pixel transposed conv), 0.41-0.44 s with 'winograd' and its first
rules, 0.35-0.37 s with the current ones (the whole step: 0.32-0.35 s, benchmarks/README.md).

Parameters are Flax's: `kernel` (kh, kw, in, out) and `bias` (out,), so checkpoints and weight
importers do not depend on the implementation.

Usage::

  y = Conv(64, (3, 3), strides=2, padding=((1, 1), (1, 1)), impl="auto")(x_BHWC)
  y = conv2d(x_BHWC, kernel_HWIO, strides=(1, 1), padding=((1, 1), (1, 1)), impl="winograd")
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CONV_IMPLS = ("auto", "xla", "subpixel", "im2col", "winograd")
# What 'auto' means per backend: the fastest form measured on CPU. (A 1- vs 8-device gradient
# difference of 'winograd'/'im2col' came from XLA:CPU's YNNPACK fusion of the first conv's
# tiny-contraction matmul, see _XLA_FORWARD_MAX_CONTRACTION; since that conv's forward uses
# XLA's conv, 1 and 8 devices agree to 1e-6 and tests/conv_test.py checks the compiled step.)
_AUTO_IMPL = {"cpu": "winograd"}

# Winograd needs enough input channels to amortise its transforms: on ECCV16's 1-channel first
# conv it is 3x slower than XLA, where im2col is 1.5-1.8x faster than XLA (~2 GFLOP/s there).
_WINOGRAD_MIN_CHANNELS = 16
# im2col computes the forward pass of convs with at most this many products per output (e.g. a
# 3x3 conv on 1 channel: 9) with XLA's conv instead of a matmul. XLA:CPU fuses such a
# tiny-contraction matmul into a YNNPACK call that, inside some whole compiled train steps (the
# ECCV16 tiny step on 1 device with 'winograd', on 8 devices with 'im2col'), left values that
# gave kernel gradients 3-11% off (disabling YNN fusions, --xla_cpu_experimental_ynn_fusion_type=,
# made them exact; the same matmul compiled alone is exact). XLA's conv is as fast there.
_XLA_FORWARD_MAX_CONTRACTION = 64
# Convs of fewer FLOPs than this (forward, 2 x multiply-adds) keep XLA's conv whatever the impl:
# their time is negligible and XLA's form compiles fastest (whole tiny models then compile as
# quickly as with 'subpixel': tests, smoke runs). ECCV16's smallest conv at 128 px, batch 8, the
# first one, has 151 MFLOPs.
_MIN_CUSTOM_FLOPS = 20e6
# Winograd for pix2pix's kernels (see _winograd_applies) from this many output pixels per image.
_WINOGRAD_MIN_OUTPUT_PIXELS = 200
# im2col copies kh*kw views of the input for every output channel count; below this many output
# channels that copy costs more than the matmul saves (a U-Net's 2-channel ab head: 34 ms with
# im2col, 5.6 with XLA's conv, fwd+bwd, 64x64x128 -> 128x128x2, batch 4), so XLA's conv is used.
_IM2COL_MIN_OUT_CHANNELS = 32
# 'winograd' computes the convs it does not transform with im2col only where the output has at
# most this many pixels per image: XLA:CPU's own conv loops are at their best on large maps and
# slow on small ones with many channels (fwd+bwd alone, batch 4, GFLOP/s XLA vs im2col: 4x4/2
# conv 8x8x512 -> 4x4: 135 vs 446; 16x16x256 -> 8x8: 373 vs 531; 32x32x128 -> 16x16: 474 vs
# 423; 64x64x64 -> 32x32: 225 vs 133; 4x4 stride-1 16x16x256 -> 15x15x512: 511 vs 358). In the
# whole pix2pix step (128 px, batch 4), where im2col's matmuls overlap with other work, im2col
# up to 32x32 outputs was faster: 0.354-0.362 s/step with 1024 (and 4096), 0.375 with 64.
_IM2COL_MAX_OUTPUT_PIXELS = 1024
# ...for kernels of at least this many taps. ECCV16's 3x3 strided convs and the 2x2 phases of
# transposed convs were as fast or faster through im2col on every map size measured.
_XLA_MIN_TAPS = 16

# torch's 4x4, stride-2 transposed conv (pix2pix's U-Net, ECCV16's conv8_1) is one 2x2 conv of
# the 1-padded input with all four phases' outputs on maps of at least this many pixels, and
# phase by phase on smaller ones, where the extra (H+1)(W+1) - HW windows cost more than the
# shared patches save (fwd+bwd, ms, shared vs phases: 8x16x16x512 -> 256: 78 vs 81; 4x32x32x256
# -> 64: 21 vs 30; 4x16x16x512 -> 128: 19.5 vs 23.3; 4x8x8x1024 -> 256: 23.0 vs 22.2; 4x4x4x1024
# -> 512: 19.1 vs 14.2).
_SHARED_WINDOW_MIN_PIXELS = 256

Pads = tuple[tuple[int, int], tuple[int, int]]
_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def resolve_conv_impl(impl: str, backend: str | None = None) -> str:
  """`model.conv_impl` -> a concrete implementation; 'auto' picks by `backend` (default: JAX's).

  'auto' is 'winograd' on CPU and 'xla' on GPU and TPU (cuDNN and the TPU compiler choose
  their own algorithms, Winograd included). Raises ValueError naming the config key for an
  unknown value.
  """
  if impl not in CONV_IMPLS:
    raise ValueError(f"config key model.conv_impl={impl!r} is not one of {list(CONV_IMPLS)}")
  if impl != "auto":
    return impl
  return _AUTO_IMPL.get(backend or jax.default_backend(), "xla")


# ------------------------------------------------------------------------------------------------
# Shapes and padding
# ------------------------------------------------------------------------------------------------


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
  if isinstance(value, (int, np.integer)):
    return int(value), int(value)
  value = tuple(int(v) for v in value)
  if len(value) != 2:
    raise ValueError(f"{name} must be an int or a pair of ints for a 2-D conv, got {value}")
  return value


def conv_padding(padding: Any, in_hw: tuple[int, int], kernel_hw: tuple[int, int],
                 strides: tuple[int, int], dilation: tuple[int, int]) -> Pads:
  """Flax/lax padding ('SAME', 'VALID', int, ints or (lo, hi) pairs) -> ((lo, hi), (lo, hi))."""
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding {padding!r} is not supported; use 'SAME', 'VALID' or pairs")
    dilated = tuple((k - 1) * d + 1 for k, d in zip(kernel_hw, dilation))
    return tuple(lax.padtype_to_pads(in_hw, dilated, strides, padding.upper()))
  if isinstance(padding, (int, np.integer)):
    return ((int(padding),) * 2,) * 2
  pads = []
  for p in padding:
    pads.append((int(p), int(p)) if isinstance(p, (int, np.integer)) else
                tuple(int(v) for v in p))
  if len(pads) != 2 or any(len(p) != 2 for p in pads):
    raise ValueError(f"padding must be 2 (lo, hi) pairs for a 2-D conv, got {padding!r}")
  return tuple(pads)


def conv_transpose_padding(padding: Any, kernel_hw: tuple[int, int],
                           strides: tuple[int, int]) -> Pads:
  """`lax.conv_transpose` padding -> explicit pads of its stride-dilated input.

  Pairs are used as given (they pad the dilated input, as in `lax.conv_transpose`); 'SAME' and
  'VALID' follow lax: output size `in * stride` resp. `in * stride + max(k - stride, 0)`.
  """
  if not isinstance(padding, str):
    return conv_padding(padding, (0, 0), kernel_hw, strides, (1, 1))
  pads = []
  for k, s in zip(kernel_hw, strides):
    if padding.upper() == "SAME":
      total = k + s - 2
      lo = k - 1 if s > k - 1 else math.ceil(total / 2)
    elif padding.upper() == "VALID":
      total = k + s - 2 + max(k - s, 0)
      lo = k - 1
    else:
      raise ValueError(f"padding {padding!r} is not supported; use 'SAME', 'VALID' or pairs")
    pads.append((lo, total - lo))
  return tuple(pads)


def _pad_hw(x_BHWC: jax.Array, pads: Pads) -> jax.Array:
  """Zero padding of H and W; negative pads crop."""
  (top, bottom), (left, right) = pads
  if top == bottom == left == right == 0:
    return x_BHWC
  zero = jnp.zeros((), x_BHWC.dtype)
  return lax.pad(x_BHWC, zero, ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)))


def _out_size(size: int, k: int, s: int, d: int, pad: tuple[int, int]) -> int:
  return (size + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


# ------------------------------------------------------------------------------------------------
# im2col: a conv as one matmul, with a matmul-only VJP
# ------------------------------------------------------------------------------------------------


def _view_offsets(kernel_hw, dilation, flip: bool) -> list[tuple[int, int]]:
  """Input offsets of the views for kernel taps (i, j) in HWIO order; `flip`: of the flipped kernel."""
  (kh, kw), (dh, dw) = kernel_hw, dilation
  row = (lambda i: kh - 1 - i) if flip else (lambda i: i)
  col = (lambda j: kw - 1 - j) if flip else (lambda j: j)
  return [(row(i) * dh, col(j) * dw) for i in range(kh) for j in range(kw)]


def _im2col(x_BHWC, kernel_hw, strides, pads, dilation, flip=False) -> jax.Array:
  """(B, Ho, Wo, kh*kw*C) patches, ordered (kernel row, kernel column, channel) like HWIO.

  With `flip` the patches are those of the kernel flipped in H and W (transposed convs), so
  that the unflipped kernel multiplies them: no reversed copy of the kernel is made.
  """
  xp = _pad_hw(x_BHWC, pads)
  b, hp, wp, c = xp.shape
  (kh, kw), (sh, sw), (dh, dw) = kernel_hw, strides, dilation
  ho, wo = _out_size(hp, kh, sh, dh, (0, 0)), _out_size(wp, kw, sw, dw, (0, 0))
  views = [lax.slice(xp, (0, r, q, 0), (b, r + (ho - 1) * sh + 1, q + (wo - 1) * sw + 1, c),
                     (1, sh, sw, 1))
           for r, q in _view_offsets(kernel_hw, dilation, flip)]
  return views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)


def _col2im(dpatches_BHWK, x_shape, kernel_hw, strides, pads, dilation, flip=False) -> jax.Array:
  """The transpose of `_im2col`: sums each view's cotangent back into its input positions."""
  b, h, w, c = x_shape
  (sh, sw) = strides
  hp, wp = h + pads[0][0] + pads[0][1], w + pads[1][0] + pads[1][1]
  _, ho, wo, _ = dpatches_BHWK.shape
  zero = jnp.zeros((), dpatches_BHWK.dtype)
  total = None
  for index, (r, q) in enumerate(_view_offsets(kernel_hw, dilation, flip)):
    view = lax.slice_in_dim(dpatches_BHWK, index * c, (index + 1) * c, axis=3)
    placed = lax.pad(view, zero, (
        (0, 0, 0),
        (r, hp - r - (ho - 1) * sh - 1, sh - 1),
        (q, wp - q - (wo - 1) * sw - 1, sw - 1),
        (0, 0, 0)))
    total = placed if total is None else total + placed
  (top, bottom), (left, right) = pads
  return _pad_hw(total, ((-top, -bottom), (-left, -right)))


def _im2col_forward(x_BHWC, kernel_HWIO, strides, pads, dilation, flip=False):
  kh, kw, cin, cout = kernel_HWIO.shape
  patches = _im2col(x_BHWC, (kh, kw), strides, pads, dilation, flip)
  return lax.dot_general(patches, kernel_HWIO.reshape(kh * kw * cin, cout),
                         (((3,), (0,)), ((), ())))


def _xla_conv(x_BHWC, kernel_HWIO, strides, pads, dilation, flip=False):
  if flip:
    kernel_HWIO = kernel_HWIO[::-1, ::-1]
  return lax.conv_general_dilated(x_BHWC, kernel_HWIO, strides, pads, rhs_dilation=dilation,
                                  dimension_numbers=_DIMENSION_NUMBERS)


def _im2col_or_xla_forward(x_BHWC, kernel_HWIO, strides, pads, dilation, flip):
  kh, kw, cin, _ = kernel_HWIO.shape
  if kh * kw * cin <= _XLA_FORWARD_MAX_CONTRACTION:
    return _xla_conv(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)
  return _im2col_forward(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _conv_im2col(x_BHWC, kernel_HWIO, strides, pads, dilation, flip):
  return _im2col_or_xla_forward(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)


def _conv_im2col_fwd(x_BHWC, kernel_HWIO, strides, pads, dilation, flip):
  # Only the input is kept: patches are kh*kw times larger and cheap to rebuild.
  y = _im2col_or_xla_forward(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)
  return y, (x_BHWC, kernel_HWIO)


def _conv_im2col_bwd(strides, pads, dilation, flip, residuals, dy_BHWO):
  x_BHWC, kernel_HWIO = residuals
  kh, kw, cin, cout = kernel_HWIO.shape
  patches = _im2col(x_BHWC, (kh, kw), strides, pads, dilation, flip)
  # (dy^T @ patches)^T avoids a transposed copy of the patches but made the pix2pix step 25%
  # slower: XLA:CPU's matmul prefers this orientation.
  dkernel = lax.dot_general(patches, dy_BHWO, (((0, 1, 2), (0, 1, 2)), ((), ())),
                            preferred_element_type=jnp.float32)
  dpatches = lax.dot_general(dy_BHWO, kernel_HWIO.reshape(kh * kw * cin, cout),
                             (((3,), (1,)), ((), ())))
  dx = _col2im(dpatches, x_BHWC.shape, (kh, kw), strides, pads, dilation, flip)
  return dx.astype(x_BHWC.dtype), dkernel.reshape(kernel_HWIO.shape).astype(kernel_HWIO.dtype)


_conv_im2col.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


def _conv_pointwise(x_BHWC, kernel_11IO, strides, pads):
  """A 1x1 conv: a dot over channels (autodiff gives matmul gradients)."""
  xp = _pad_hw(x_BHWC, pads)
  if strides != (1, 1):
    xp = xp[:, ::strides[0], ::strides[1]]
  return lax.dot_general(xp, kernel_11IO[0, 0], (((3,), (0,)), ((), ())))


# ------------------------------------------------------------------------------------------------
# Winograd F(m x m, r x r)
# ------------------------------------------------------------------------------------------------

# Winograd's minimal filtering F(m, r) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
# Networks", 2016), nested in two dimensions: for an n x n input tile d (n = m + r - 1) and an
# r x r kernel g, the m x m output tile is A^T [(G g G^T) * (B^T d B)] A: n^2 multiplications
# instead of m^2 r^2 (F(2, 3): 16 for 36; F(3, 3): 25 for 81; F(3, 4): 36 for 144). The
# interpolation points are 0, +-1, +-2 and infinity, so B^T and A^T hold small integers, exact in
# float; the kernel transform G carries the fractions. F(4x4, 3x3) measured no faster here than
# F(2x2, 3x3) and compiled 2x slower.
# (B^T, G, A^T) by (m, r).
_WINOGRAD = {
    (2, 2): (np.array([[1, -1, 0], [0, 1, 0], [0, -1, 1]], np.float64),
             np.array([[1, 0], [1, 1], [0, 1]], np.float64),
             np.array([[1, 1, 0], [0, 1, 1]], np.float64)),
    (2, 3): (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
             np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64),
             np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    (2, 4): (np.array([[2, -1, -2, 1, 0], [0, -2, -1, 1, 0], [0, 2, -3, 1, 0], [0, -1, 0, 1, 0],
                       [0, 2, -1, -2, 1]], np.float64),
             np.array([[1 / 2, 0, 0, 0], [-1 / 2, -1 / 2, -1 / 2, -1 / 2],
                       [-1 / 6, 1 / 6, -1 / 6, 1 / 6], [1 / 6, 1 / 3, 2 / 3, 4 / 3],
                       [0, 0, 0, 1]], np.float64),
             np.array([[1, 1, 1, 1, 0], [0, 1, -1, 2, 1]], np.float64)),
    (3, 2): (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]], np.float64),
             np.array([[1, 0], [0.5, 0.5], [0.5, -0.5], [0, 1]], np.float64),
             np.array([[1, 1, 1, 0], [0, 1, -1, 0], [0, 1, 1, 1]], np.float64)),
    (3, 3): (np.array([[2, -1, -2, 1, 0], [0, -2, -1, 1, 0], [0, 2, -3, 1, 0], [0, -1, 0, 1, 0],
                       [0, 2, -1, -2, 1]], np.float64),
             np.array([[1 / 2, 0, 0], [-1 / 2, -1 / 2, -1 / 2], [-1 / 6, 1 / 6, -1 / 6],
                       [1 / 6, 1 / 3, 2 / 3], [0, 0, 1]], np.float64),
             np.array([[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]], np.float64)),
    (3, 4): (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                      np.float64),
             np.array([[1 / 4, 0, 0, 0], [-1 / 6, -1 / 6, -1 / 6, -1 / 6],
                       [-1 / 6, 1 / 6, -1 / 6, 1 / 6], [1 / 24, 1 / 12, 1 / 6, 1 / 3],
                       [1 / 24, -1 / 12, 1 / 6, -1 / 3], [0, 0, 0, 1]], np.float64),
             np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 1]], np.float64)),
}


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> jax.Array:
  """stack([sum_k matrix[a, k] * parts[k] for each row a]): a small linear map along a new axis 0.

  Built from adds and subtracts (no matmul), so XLA fuses it with its neighbours.
  """
  out = []
  for row in matrix:
    total = None
    for coefficient, part in zip(row, parts):
      if coefficient == 0:
        continue
      term = part if abs(coefficient) == 1 else lax.mul(part, jnp.asarray(abs(coefficient),
                                                                          part.dtype))
      if total is None:
        total = term if coefficient > 0 else lax.neg(term)
      else:
        total = lax.add(total, term) if coefficient > 0 else lax.sub(total, term)
    out.append(lax.expand_dims(total, (0,)))
  return lax.concatenate(out, 0)


def _strided(x, axis: int, start: int, count: int, stride: int) -> jax.Array:
  """x[..., start : start + count * stride : stride, ...] along `axis`."""
  return lax.slice_in_dim(x, start, start + (count - 1) * stride + 1, stride, axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _unstack(x, axis: int) -> list[jax.Array]:
  """The slices of `x` along `axis`; differentiated by stacking their cotangents.

  Indexing's own VJP pads each cotangent to the whole array and adds them, which XLA:CPU
  materialises (one full-size copy per slice, e.g. 16 of a Winograd product's gradient).
  """
  return [lax.index_in_dim(x, i, axis, keepdims=False) for i in range(x.shape[axis])]


def _unstack_fwd(x, axis):
  return _unstack(x, axis), None


def _unstack_bwd(axis, _, cotangents):
  return (jnp.stack(cotangents, axis),)


_unstack.defvjp(_unstack_fwd, _unstack_bwd)


def _winograd_matrices(r: int, batch: int, ho: int, wo: int):
  """(B^T, G, A^T) of F(m, r) for an r x r conv with these outputs: F(3, r) where its 3x3 tiles
  still give the matmuls enough rows, else F(2, r).

  Larger tiles take fewer products per output (4x4: 36 per 9 against 25 per 4; 2x2: 16 per 9
  against 9 per 4) and fewer transformed values, in matmuls of fewer rows (fwd+bwd, ms, F(2, r)
  vs F(3, r): 4x4 on 4x16x16x256 -> 512: 22.6 vs 15.1, on 1x16x16x256: 8.2 vs 10.4 (25 tiles);
  2x2, 4x33x33x256 -> 128: 13.4 vs 11.6, 4x33x33 windows of 256 -> 256: 22.1 vs 16.5 (484
  tiles), 4x17x17x512 -> 256: 10.0 vs 10.9 (144 tiles)). 3x3 kernels (25 per 9 against 16 per
  4) only on maps of 16x16 and more, where 3x3 tiles waste little (ECCV16 at 128 px, batch
  8: 16x16x512 -> 512: 69.9 vs 57.5; 32x32x256 -> 256: 64.2 vs 49.4; 64x64x64 -> 128: 49.7 vs
  32.0; the 8x8 polyphase maps of its dilated convs, 32x8x8x512: 68.2 vs 89.5).
  """
  tiles = batch * -(-ho // 3) * -(-wo // 3)
  large = (tiles >= 64 if r == 4 else tiles >= 256 if r == 2 else
           tiles >= 64 and min(ho, wo) >= 16)
  return _WINOGRAD[(3 if large else 2, r)]


def _winograd_conv(x_BHWC, kernel_rrIO, pads, matrices=None):
  """Stride-1, undilated r x r conv by F(m x m, r x r): (m+r-1)^2 matmuls over the m x m
  output tiles (`matrices` (B^T, G, A^T); by default `_winograd_matrices`)."""
  b, h, w, cin = x_BHWC.shape
  r, cout = kernel_rrIO.shape[0], kernel_rrIO.shape[-1]
  ho, wo = _out_size(h, r, 1, 1, pads[0]), _out_size(w, r, 1, 1, pads[1])
  bt, g, at = _winograd_matrices(r, b, ho, wo) if matrices is None else matrices
  m, n = at.shape
  th, tw = -(-ho // m), -(-wo // m)
  # Pad (or crop) to exactly the m*tiles + r - 1 rows and columns the tiles read.
  xp = _pad_hw(x_BHWC, ((pads[0][0], m * th + r - 1 - h - pads[0][0]),
                        (pads[1][0], m * tw + r - 1 - w - pads[1][0])))
  # B^T d B: rows of the tiles, then columns -> (n, n, B, th, tw, C).
  rows = _combine(bt, [_strided(xp, 1, k, th, m) for k in range(n)])
  v = _combine(bt, [_strided(rows, 3, k, tw, m) for k in range(n)])
  v_TNI = v.reshape(n * n, b * th * tw, cin)
  # G g G^T likewise (an einsum would lower to K=r matmuls with layout copies, ~15% of a step).
  u = _combine(g, _unstack(_combine(g, _unstack(kernel_rrIO, 0)), 1))
  prod = lax.dot_general(v_TNI, u.reshape(n * n, cin, cout), (((2,), (1,)), ((0,), (0,))))
  prod = prod.reshape(n, n, b, th, tw, cout)
  # A^T M A -> (m, m, B, th, tw, O): output row and column within each tile first.
  y = _combine(at, _unstack(_combine(at, _unstack(prod, 0)), 1))
  y = y.transpose(2, 3, 0, 4, 1, 5)  # (B, th, row in tile, tw, column in tile, O)
  return y.reshape(b, m * th, m * tw, cout)[:, :ho, :wo]


def _winograd_conv4x4_stride2(x_BHWC, kernel_44IO, pads):
  """A 4x4, stride-2 conv as a 2x2 stride-1 conv of the space-to-depth input (4x the channels:
  tap 2a + p reads phase p of window tap a), by Winograd."""
  b, h, w, cin = x_BHWC.shape
  cout = kernel_44IO.shape[-1]
  ho, wo = _out_size(h, 4, 2, 1, pads[0]), _out_size(w, 4, 2, 1, pads[1])
  (top, bottom), (left, right) = pads
  bottom += (h + top + bottom) % 2  # an even padded size; the extra row reaches no output
  right += (w + left + right) % 2
  xp = _pad_hw(x_BHWC, ((top, bottom), (left, right)))
  h2, w2 = xp.shape[1] // 2, xp.shape[2] // 2
  x_s2d = xp.reshape(b, h2, 2, w2, 2, cin).transpose(0, 1, 3, 2, 4, 5).reshape(b, h2, w2, 4 * cin)
  kernel = kernel_44IO.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 1, 3, 4, 5)
  y = _winograd_conv(x_s2d, kernel.reshape(2, 2, 4 * cin, cout), ((0, 0), (0, 0)))
  return y[:, :ho, :wo]


def _space_to_batch(x_BHWC, d):
  """(B, H, W, C) -> (d*d*B, H/d, W/d, C): the d x d polyphase components of the input."""
  b, h, w, c = x_BHWC.shape
  x = x_BHWC.reshape(b, h // d, d, w // d, d, c)
  return x.transpose(2, 4, 0, 1, 3, 5).reshape(d * d * b, h // d, w // d, c)


def _batch_to_space(y, d, batch):
  _, h, w, c = y.shape
  y = y.reshape(d, d, batch, h, w, c)
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(batch, h * d, w * d, c)


def _winograd_applies(x_shape, kernel_hw, strides, pads, dilation, out_pixels: int) -> bool:
  """Whether `_conv_winograd` computes this conv, and is the faster form for it."""
  if kernel_hw == (3, 3):  # ECCV16's convs, dilated ones through space-to-batch
    if strides != (1, 1) or dilation[0] != dilation[1]:
      return False
    d = dilation[0]
    return all(v % d == 0 for v in (x_shape[1], x_shape[2], *pads[0], *pads[1]))
  # pix2pix's convs: 4x4 stride 2 (space-to-depth), 4x4 stride 1 (PatchGAN), 2x2 (the shared
  # windows of its transposed convs). Faster than im2col from 16x16 outputs on (fwd+bwd, batch
  # 4, ms, im2col vs Winograd: 4x4 stride 1 16x16x256 -> 15x15x512: 47 vs 25; 4x4/2 64x64x64 ->
  # 32x32: 24 vs 14; 32x32x128 -> 16x16: 15 vs 13; 2x2 on 33x33x256 -> 256: 30 vs 18; on
  # 17x17x512 -> 512: 26 vs 22), not on smaller maps (4x4/2 16x16x256 -> 8x8: 13.6 vs 13.8;
  # 8x8x512 -> 4x4: 7 vs 21; 2x2 on 9x9x1024: 23 vs 28), where its tiles are few.
  return (dilation == (1, 1) and out_pixels >= _WINOGRAD_MIN_OUTPUT_PIXELS and
          (kernel_hw == (4, 4) and strides in ((1, 1), (2, 2)) or
           kernel_hw == (2, 2) and strides == (1, 1)))


def _conv_winograd(x_BHWC, kernel_rrIO, strides, pads, d):
  if strides == (2, 2):
    return _winograd_conv4x4_stride2(x_BHWC, kernel_rrIO, pads)
  if d == 1:
    return _winograd_conv(x_BHWC, kernel_rrIO, pads)
  # A d-dilated conv is an undilated conv of each of the d x d polyphase components.
  phase_pads = tuple((lo // d, hi // d) for lo, hi in pads)
  y = _winograd_conv(_space_to_batch(x_BHWC, d), kernel_rrIO, phase_pads)
  return _batch_to_space(y, d, x_BHWC.shape[0])


# ------------------------------------------------------------------------------------------------
# Functional API
# ------------------------------------------------------------------------------------------------


def _live_taps(size: int, k: int, s: int, d: int, pad: tuple[int, int]) -> tuple[int, int, tuple[int, int]]:
  """(first tap, number of taps, new pads) of the kernel taps along one axis that read input.

  Taps that only ever meet padding (a 4x4 kernel on a 2x2 map, a U-Net's innermost levels)
  contribute nothing; dropping them shrinks the matmul and keeps the output size.
  """
  out = _out_size(size, k, s, d, pad)
  live = [t for t in range(k) if any(0 <= o * s + t * d - pad[0] < size for o in range(out))]
  if not live:
    return 0, 0, pad
  first, count = live[0], live[-1] - live[0] + 1
  lo = pad[0] - first * d
  hi = (out - 1) * s + d * (count - 1) + 1 - size - lo
  return first, count, (lo, hi)


def conv2d(x_BHWC: jax.Array, kernel_HWIO: jax.Array, *, strides=(1, 1), padding: Any = "SAME",
           dilation=(1, 1), impl: str = "xla") -> jax.Array:
  """A 2-D convolution (cross-correlation, as `lax.conv_general_dilated`) of NHWC by HWIO.

  `padding` takes Flax's forms ('SAME', 'VALID', ints, (lo, hi) pairs); `impl` one of
  CONV_IMPLS. The result has the values of `lax.conv_general_dilated` for every impl.
  """
  if x_BHWC.ndim != 4 or kernel_HWIO.ndim != 4:
    raise ValueError(f"conv2d takes NHWC inputs and HWIO kernels, got shapes {x_BHWC.shape} and "
                     f"{kernel_HWIO.shape}")
  if x_BHWC.shape[-1] != kernel_HWIO.shape[2]:
    raise ValueError(f"input has {x_BHWC.shape[-1]} channels but the kernel expects "
                     f"{kernel_HWIO.shape[2]} (kernel shape {kernel_HWIO.shape})")
  impl = resolve_conv_impl(impl)
  strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
  pads = conv_padding(padding, x_BHWC.shape[1:3], kernel_HWIO.shape[:2], strides, dilation)
  return _conv2d(x_BHWC, kernel_HWIO, strides, pads, dilation, impl, flip=False)


def _conv2d(x_BHWC, kernel_HWIO, strides, pads, dilation, impl: str, flip: bool) -> jax.Array:
  """conv2d with explicit pads; `flip`: correlate with kernel[::-1, ::-1] (transposed convs)."""
  kernel_hw = kernel_HWIO.shape[:2]
  batch, cin, cout = x_BHWC.shape[0], x_BHWC.shape[-1], kernel_HWIO.shape[-1]
  # Dropping dead taps below keeps the output size.
  out_hw = tuple(_out_size(x_BHWC.shape[1 + a], kernel_hw[a], strides[a], dilation[a], pads[a])
                 for a in (0, 1))
  if impl in ("xla", "subpixel"):
    return _xla_conv(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)
  (row, rows, pads_h), (col, cols, pads_w) = (
      _live_taps(x_BHWC.shape[1 + axis], kernel_hw[axis], strides[axis], dilation[axis],
                 pads[axis]) for axis in (0, 1))
  if rows == 0 or cols == 0:  # every tap reads padding only
    return jnp.zeros((batch, *out_hw, cout), jnp.result_type(x_BHWC, kernel_HWIO))
  if (rows, cols) != kernel_hw:
    if flip:  # live taps are counted on the flipped kernel
      row, col = kernel_hw[0] - row - rows, kernel_hw[1] - col - cols
    kernel_HWIO = kernel_HWIO[row:row + rows, col:col + cols]
    kernel_hw, pads = (rows, cols), (pads_h, pads_w)
  if kernel_hw == (1, 1):
    return _conv_pointwise(x_BHWC, kernel_HWIO, strides, pads)
  forward_flops = 2.0 * batch * math.prod(out_hw) * math.prod(kernel_hw) * cin * cout
  if cout < _IM2COL_MIN_OUT_CHANNELS or forward_flops < _MIN_CUSTOM_FLOPS:
    return _xla_conv(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)
  if (impl == "winograd" and cin >= _WINOGRAD_MIN_CHANNELS and
      _winograd_applies(x_BHWC.shape, kernel_hw, strides, pads, dilation,
                        math.prod(out_hw))):
    return _conv_winograd(x_BHWC, kernel_HWIO[::-1, ::-1] if flip else kernel_HWIO, strides,
                          pads, dilation[0])
  if (impl == "winograd" and math.prod(kernel_hw) >= _XLA_MIN_TAPS and
      math.prod(out_hw) > _IM2COL_MAX_OUTPUT_PIXELS):
    return _xla_conv(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)
  return _conv_im2col(x_BHWC, kernel_HWIO, strides, pads, dilation, flip)


def _phase_taps(k: int, s: int, pad_lo: int, r: int) -> tuple[int, int]:
  """First tap and input offset of output phase r of a stride-s transposed conv (1-D).

  Output o = s*m + r of a conv over the s-dilated input padded by pad_lo reads input
  m + (r + t - pad_lo) / s with tap t for every t = r' (mod s), r' = (pad_lo - r) mod s.
  """
  first = (pad_lo - r) % s
  return first, (r + first - pad_lo) // s


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _scatter_patches(patches_BHWK, out_shape, kernel_hw, strides, pads):
  """`_col2im`, differentiated as its adjoint `_im2col` (one concatenation, no padded copies)."""
  return _col2im(patches_BHWK, out_shape, kernel_hw, strides, pads, (1, 1))


def _scatter_patches_fwd(patches_BHWK, out_shape, kernel_hw, strides, pads):
  return _scatter_patches(patches_BHWK, out_shape, kernel_hw, strides, pads), None


def _scatter_patches_bwd(out_shape, kernel_hw, strides, pads, _, dy_BHWC):
  return (_im2col(dy_BHWC, kernel_hw, strides, pads, (1, 1)),)


_scatter_patches.defvjp(_scatter_patches_fwd, _scatter_patches_bwd)


def _conv_transpose_scatter(x_BHWC, kernel_HWIO, strides, pads, out_hw):
  """A transposed conv with few output channels as col2im(x @ kernel): every tap in one matmul.

  `kernel_HWIO` (unflipped) and `pads` are those of the strided conv whose adjoint this is.
  The matmul's output has kh*kw*out channels, far fewer than the kh*kw*in of im2col's patches
  (a U-Net's ab head, 128 -> 2 channels: 32 against 512), and its gradients are two matmuls
  with the im2col of the output gradient.
  """
  kh, kw, cin, cout = kernel_HWIO.shape
  taps_BHWK = lax.dot_general(x_BHWC, kernel_HWIO.transpose(2, 0, 1, 3).reshape(cin, -1),
                              (((3,), (0,)), ((), ())))
  return _scatter_patches(taps_BHWK, (x_BHWC.shape[0], *out_hw, cout), (kh, kw), strides, pads)


def _phase_group(i: int, reversed_groups: bool) -> int:
  """The channel group of phase i (or the phase of group i: the map is its own inverse)."""
  return 1 - i if reversed_groups else i


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _interleave_shifted_phases(y_BHWK, reversed_groups: bool):
  """(B, H+1, W+1, 2*2*O) -> (B, 2H, 2W, O): output (2m + r, 2n + c) is y[m + r, n + c, (r, c)]
  (channel group (1 - r, 1 - c) with `reversed_groups`).

  Differentiated by one concatenation of the zero-padded phase gradients (slicing's own VJP
  would materialise four padded copies of the whole array before adding them).
  """
  b, h1, w1, k = y_BHWK.shape
  y = y_BHWK.reshape(b, h1, w1, 2, 2, k // 4)
  g = functools.partial(_phase_group, reversed_groups=reversed_groups)
  rows = [jnp.stack([y[:, r:r + h1 - 1, c:c + w1 - 1, g(r), g(c)] for c in (0, 1)], axis=3)
          for r in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(b, 2 * (h1 - 1), 2 * (w1 - 1), k // 4)


def _interleave_shifted_phases_fwd(y_BHWK, reversed_groups):
  return _interleave_shifted_phases(y_BHWK, reversed_groups), None


def _interleave_shifted_phases_bwd(reversed_groups, _, dy_BHWC):
  b, h2, w2, cout = dy_BHWC.shape
  dy = dy_BHWC.reshape(b, h2 // 2, 2, w2 // 2, 2, cout)
  # Channel group (i, j) holds phase (p(i), p(j)).
  p = functools.partial(_phase_group, reversed_groups=reversed_groups)
  dgroups = [[_pad_hw(dy[:, :, p(i), :, p(j)], ((p(i), 1 - p(i)), (p(j), 1 - p(j))))
              for j in (0, 1)] for i in (0, 1)]
  dy_shifted = jnp.stack([jnp.stack(row, axis=3) for row in dgroups], axis=3)
  return (dy_shifted.reshape(b, h2 // 2 + 1, w2 // 2 + 1, 4 * cout),)


_interleave_shifted_phases.defvjp(_interleave_shifted_phases_fwd, _interleave_shifted_phases_bwd)


def _conv_transpose_4x4_stride2(x_BHWC, kernel_44IO, flip: bool, impl: str):
  """torch's ConvTranspose2d(k=4, s=2, p=1) as one 2x2 conv with 4x the outputs, interleaved.

  Output 2m + r (r = 0, 1) gets input m - 1 + r + t with tap 3 - r - 2t of torch's kernel, t =
  0, 1: all four output phases read the same 2x2 windows of the 1-padded input, shifted by the
  phase. So one im2col of 4*in channels feeds one matmul with every tap of the kernel
  (rearranged, no zeros), where the phase-by-phase form builds four; ~6% more products on a
  32x32 map (its (H+1)(W+1) windows), a quarter of the patch traffic.
  """
  cin, cout = kernel_44IO.shape[2:]
  # kernel[2a + b] at (a, b) of a (2, 2) reshape. With `flip` the kernel is indexed as torch's:
  # window tap t and phase r take its tap 3 - r - 2t, i.e. (a, b) = (1 - t, 1 - r): the conv
  # reads its windows in reverse (flip) and the phases take the channel groups in reverse, so
  # no reversed copy of the kernel is made. Without `flip` the kernel is that reverse already.
  windows = kernel_44IO.reshape(2, 2, 2, 2, cin, cout).transpose(0, 2, 4, 1, 3, 5)
  y = _conv2d(x_BHWC, windows.reshape(2, 2, cin, 4 * cout), (1, 1), ((1, 1), (1, 1)), (1, 1),
              impl, flip=flip)
  return _interleave_shifted_phases(y, flip)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _residue_kernels(kernel_HWIO, strides):
  """[[kernel[a::sh, b::sw] for b < sw] for a < sh]: the taps of each output phase.

  Its VJP interleaves the phases' kernel gradients into one dense array. Slicing's own VJP pads
  each of them to the full kernel and sums the sh*sw copies, which XLA:CPU materialises: four
  full-size writes and reads per transposed conv kernel, ~40 ms of a 0.42 s pix2pix step.
  """
  return [[kernel_HWIO[a::strides[0], b::strides[1]] for b in range(strides[1])]
          for a in range(strides[0])]


def _residue_kernels_fwd(kernel_HWIO, strides):
  return _residue_kernels(kernel_HWIO, strides), kernel_HWIO.shape


def _residue_kernels_bwd(strides, kernel_shape, dphases):
  (kh, kw, cin, cout), (sh, sw) = kernel_shape, strides
  nh, nw = -(-kh // sh), -(-kw // sw)
  # Residue classes past k % s hold one tap less; pad them to the longest and crop after.
  zero = jnp.zeros((), dphases[0][0].dtype)

  def padded(d):
    return lax.pad(d, zero, ((0, nh - d.shape[0], 0), (0, nw - d.shape[1], 0), (0, 0, 0),
                             (0, 0, 0)))

  rows = [jnp.stack([padded(dphases[a][b]) for b in range(sw)], axis=2) for a in range(sh)]
  dkernel = jnp.stack(rows, axis=1).reshape(nh * sh, nw * sw, cin, cout)
  return (dkernel[:kh, :kw],)


_residue_kernels.defvjp(_residue_kernels_fwd, _residue_kernels_bwd)


def conv_transpose2d(x_BHWC: jax.Array, kernel_HWIO: jax.Array, *, strides=(1, 1),
                     padding: Any = "SAME", dilation=(1, 1), transpose_kernel: bool = False,
                     flip_kernel: bool = False, impl: str = "xla") -> jax.Array:
  """A transposed convolution with the semantics of `lax.conv_transpose` (NHWC, HWIO).

  `flip_kernel=True` computes it with `kernel_HWIO[::-1, ::-1]` without making that reversed
  copy (e.g. torch's ConvTranspose2d with stride s, padding p is this with padding k-1-p).
  For impl != 'xla' the output is computed phase by phase: output positions (s*m + r, s*n + c)
  form a stride-1 conv of the undilated input with the taps of the kernel that reach them, so
  no multiplication by the dilation's zeros happens and each phase's gradients are dense convs.
  """
  impl = resolve_conv_impl(impl)
  strides, dilation = _pair(strides, "strides"), _pair(dilation, "dilation")
  if impl == "xla":
    return lax.conv_transpose(x_BHWC, kernel_HWIO[::-1, ::-1] if flip_kernel else kernel_HWIO,
                              strides, padding, rhs_dilation=dilation,
                              dimension_numbers=_DIMENSION_NUMBERS,
                              transpose_kernel=transpose_kernel)
  kernel = kernel_HWIO
  # transpose_kernel flips the kernel too: the two flips cancel.
  flip = flip_kernel != transpose_kernel
  if transpose_kernel:
    kernel = jnp.swapaxes(kernel, 2, 3)
  if dilation != (1, 1):
    zero = jnp.zeros((), kernel.dtype)
    kernel = lax.pad(kernel, zero, ((0, 0, dilation[0] - 1), (0, 0, dilation[1] - 1),
                                    (0, 0, 0), (0, 0, 0)))
  if x_BHWC.shape[-1] != kernel.shape[2]:
    raise ValueError(f"input has {x_BHWC.shape[-1]} channels but the transposed conv kernel "
                     f"expects {kernel.shape[2]} (kernel shape {kernel_HWIO.shape}, "
                     f"transpose_kernel={transpose_kernel})")
  kernel_hw = kernel.shape[:2]
  pads = conv_transpose_padding(padding, kernel_hw, strides)
  b, h, w, _ = x_BHWC.shape
  cout = kernel.shape[-1]
  out_hw = tuple((n - 1) * s + 1 + lo + hi - k + 1
                 for n, s, (lo, hi), k in zip((h, w), strides, pads, kernel_hw))
  adjoint_pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel_hw, pads))
  if (impl != "subpixel" and cout < _IM2COL_MIN_OUT_CHANNELS and dilation == (1, 1) and
      all(0 <= p < k for k, pair in zip(kernel_hw, adjoint_pads) for p in pair)):
    # This is the adjoint of a stride-s conv with pads k-1-pad and the flipped kernel.
    return _conv_transpose_scatter(x_BHWC, kernel if flip else kernel[::-1, ::-1], strides,
                                   adjoint_pads, out_hw)
  if (impl != "subpixel" and kernel_hw == (4, 4) and strides == (2, 2) and
      pads == ((2, 2), (2, 2)) and dilation == (1, 1) and h * w >= _SHARED_WINDOW_MIN_PIXELS):
    return _conv_transpose_4x4_stride2(x_BHWC, kernel, flip, impl)
  inner_impl = "xla" if impl == "subpixel" else impl
  phase_len = [-(-n // s) for n, s in zip(out_hw, strides)]  # outputs per phase, padded up
  residue_kernels = _residue_kernels(kernel, strides)

  def phase(r: int, c: int) -> jax.Array:
    lengths, taps, phase_pads = [], [], []
    for axis, q in enumerate((r, c)):
      n_in, k, s = (h, w)[axis], kernel_hw[axis], strides[axis]
      length = max(0, -(-(out_hw[axis] - q) // s))
      first, offset = _phase_taps(k, s, pads[axis][0], q)
      n_taps = max(0, -(-(k - first) // s))
      lengths.append(length)
      taps.append((first, n_taps))
      phase_pads.append((-offset, length + n_taps - 1 - n_in + offset))
    if min(lengths) == 0 or taps[0][1] == 0 or taps[1][1] == 0:
      y = jnp.zeros((b, *lengths, cout), jnp.result_type(x_BHWC, kernel))
    else:
      # A phase reads every tap of its residue class (n taps span it). With `flip`, taps first,
      # first + s, ... of the flipped kernel are those of the kernel from k-1-first-s(n-1) on.
      residue = [k - 1 - first - s * (n - 1) if flip else first
                 for k, s, (first, n) in zip(kernel_hw, strides, taps)]
      y = _conv2d(x_BHWC, residue_kernels[residue[0]][residue[1]], (1, 1), tuple(phase_pads),
                  (1, 1), inner_impl, flip=flip)
    return _pad_hw(y, ((0, phase_len[0] - lengths[0]), (0, phase_len[1] - lengths[1])))

  sh, sw = strides
  y = jnp.stack([jnp.stack([phase(r, c) for c in range(sw)], axis=3) for r in range(sh)], axis=2)
  y = y.reshape(b, phase_len[0] * sh, phase_len[1] * sw, cout)
  return y[:, :out_hw[0], :out_hw[1]]


# ------------------------------------------------------------------------------------------------
# Flax modules
# ------------------------------------------------------------------------------------------------


class _ConvLayer(nn.Module):
  """What `Conv` and `ConvTranspose` share: the attributes of `flax.linen.Conv`, the parameters
  `kernel` and `bias` (promoted with the input to `dtype`) and the NHWC check.

  A subclass gives the kernel's shape for its input channels and the convolution itself.
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Any = "SAME"
  kernel_dilation: int | Sequence[int] = 1
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  impl: str = "xla"

  def _kernel_shape(self, kernel_hw: tuple[int, int], in_features: int) -> tuple[int, ...]:
    raise NotImplementedError

  def _convolve(self, x_BHWC: jax.Array, kernel: jax.Array) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x_BHWC: jax.Array) -> jax.Array:
    if x_BHWC.ndim != 4:
      raise ValueError(f"{type(self).__name__} {self.name} takes (B, H, W, C) inputs, got shape "
                       f"{x_BHWC.shape}")
    kernel_hw = _pair(self.kernel_size, "kernel_size")
    kernel = self.param("kernel", self.kernel_init,
                        self._kernel_shape(kernel_hw, x_BHWC.shape[-1]), self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x_BHWC, kernel, bias = nn.dtypes.promote_dtype(x_BHWC, kernel, bias, dtype=self.dtype)
    y = self._convolve(x_BHWC, kernel)
    return y if bias is None else y + bias


class Conv(_ConvLayer):
  """`nn.Conv` for NHWC images with a selectable lowering; same parameters `kernel`, `bias`.

  Call as `Conv(features, (3, 3), strides=2, padding=((1, 1), (1, 1)), impl='auto')(x_BHWC)`.

  Attributes:
    features, kernel_size, strides, padding, kernel_dilation, use_bias, dtype, param_dtype,
      kernel_init, bias_init: as in `flax.linen.Conv` (padding 'CIRCULAR'/'REFLECT' excluded).
    impl: one of CONV_IMPLS; 'auto' resolves for the default backend.
  """

  def _kernel_shape(self, kernel_hw: tuple[int, int], in_features: int) -> tuple[int, ...]:
    return (*kernel_hw, in_features, self.features)

  def _convolve(self, x_BHWC: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv2d(x_BHWC, kernel, strides=self.strides, padding=self.padding,
                  dilation=self.kernel_dilation, impl=self.impl)


class ConvTranspose(_ConvLayer):
  """`nn.ConvTranspose` for NHWC images with a selectable lowering; same parameters.

  With `transpose_kernel=True` the kernel has shape (kh, kw, features, in) and the layer is the
  gradient of a conv with that kernel (what torch's ConvTranspose2d computes); `padding` pads the
  stride-dilated input, as in `lax.conv_transpose`.
  """
  transpose_kernel: bool = False

  def _kernel_shape(self, kernel_hw: tuple[int, int], in_features: int) -> tuple[int, ...]:
    if self.transpose_kernel:
      return (*kernel_hw, self.features, in_features)
    return (*kernel_hw, in_features, self.features)

  def _convolve(self, x_BHWC: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv_transpose2d(x_BHWC, kernel, strides=self.strides, padding=self.padding,
                            dilation=self.kernel_dilation, transpose_kernel=self.transpose_kernel,
                            impl=self.impl)
