"""Tests of colorjax.ops.conv: every lowering gives lax's values and gradients, in layers and models."""
import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import conftest

from colorjax import color, losses, sharding, train
from colorjax import config as config_lib
from colorjax.models import eccv16
from colorjax.ops import conv
from colorjax.ops import xla_cpu

PHOTOS_DIR = pathlib.Path(__file__).resolve().parents[1] / "colorjax" / "assets" / "photos"
IMPLS = [impl for impl in conv.CONV_IMPLS if impl not in ("auto", "xla")]
# Unoptimised machine code compiles 3x faster and computes the same values: these tests check
# numbers and shapes, not speed.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _jit(fn, **options):
  return jax.jit(fn, compiler_options={**_FAST_COMPILE, **options})

# (input shape, kernel shape, keyword arguments of conv2d). Channel counts reach both sides of
# the 'winograd' rules (>= 16 input channels; contraction <= 64), sizes are odd and even.
CONV_CASES = [
    ((2, 9, 8, 16), (3, 3, 16, 5), dict(padding=((1, 1), (1, 1)))),
    ((2, 9, 7, 3), (3, 3, 3, 4), dict(strides=2, padding=((1, 1), (1, 1)))),
    ((1, 10, 9, 16), (3, 3, 16, 4), dict(strides=(2, 1), padding="SAME")),
    ((2, 8, 8, 16), (3, 3, 16, 4), dict(dilation=2, padding=((2, 2), (2, 2)))),
    ((1, 9, 7, 16), (3, 3, 16, 4), dict(dilation=2, padding="SAME")),
    ((2, 7, 6, 8), (3, 3, 8, 4), dict(dilation=(2, 1), padding=((1, 2), (0, 1)))),
    ((1, 7, 11, 16), (3, 3, 16, 3), dict(padding="VALID")),
    ((1, 6, 6, 16), (3, 3, 16, 3), dict(padding=((2, 0), (-1, 3)))),
    ((2, 9, 7, 3), (4, 4, 3, 4), dict(strides=2, padding=((1, 1), (1, 1)))),
    ((2, 9, 7, 6), (1, 1, 6, 4), dict(strides=2, padding=0)),
    ((1, 8, 8, 1), (3, 3, 1, 4), dict(padding=1)),
    # Kernel taps that only read padding (a U-Net's innermost levels) are dropped.
    ((2, 2, 2, 8), (4, 4, 8, 6), dict(strides=2, padding=((1, 1), (1, 1)))),
    ((1, 2, 3, 4), (4, 4, 4, 5), dict(strides=2, padding=((1, 1), (1, 1)))),
    ((1, 2, 3, 4), (3, 3, 4, 5), dict(padding=((5, -2), (1, 1)))),  # every row reads padding
    ((2, 4, 4, 8), (4, 4, 8, 6), dict(strides=2, padding=((1, 1), (1, 1)))),
    # pix2pix's kernels by Winograd F(m x m, r x r): 4x4 stride 1 (PatchGAN), 4x4 stride 2
    # (space-to-depth; even and odd padded sizes), 2x2.
    ((2, 9, 8, 16), (4, 4, 16, 5), dict(padding=((1, 1), (1, 1)))),
    ((2, 10, 9, 16), (4, 4, 16, 5), dict(strides=2, padding=((1, 1), (1, 1)))),
    ((1, 9, 7, 16), (4, 4, 16, 4), dict(strides=2, padding=((1, 2), (2, 1)))),
    ((1, 7, 8, 16), (2, 2, 16, 4), dict(padding=((1, 0), (0, 1)))),
]

# (input shape, kernel shape, keyword arguments of conv_transpose2d), lax.conv_transpose semantics.
TRANSPOSE_CASES = [
    ((2, 5, 6, 8), (4, 4, 4, 8), dict(strides=(2, 2), padding=((2, 2), (2, 2)),
                                      transpose_kernel=True)),  # torch k=4, s=2, p=1
    ((1, 5, 6, 3), (3, 3, 3, 4), dict(strides=(2, 2), padding="SAME")),
    ((1, 5, 6, 3), (3, 3, 3, 4), dict(strides=(2, 2), padding="VALID")),
    ((1, 5, 6, 3), (3, 3, 3, 4), dict(strides=(3, 2), padding=((0, 1), (2, 0)))),
    ((1, 4, 5, 3), (2, 2, 3, 4), dict(strides=(3, 3), padding="VALID")),
    ((1, 5, 4, 3), (3, 3, 3, 4), dict(strides=(2, 2), padding="SAME", dilation=(2, 2))),
    # torch's ConvTranspose2d(k=4, s=2, p=1) as the U-Net computes it, down to a 1x1 input.
    ((2, 4, 5, 8), (4, 4, 8, 6), dict(strides=(2, 2), padding=((2, 2), (2, 2)),
                                      flip_kernel=True)),
    ((2, 1, 1, 8), (4, 4, 8, 6), dict(strides=(2, 2), padding=((2, 2), (2, 2)),
                                      flip_kernel=True)),
    ((1, 5, 4, 3), (3, 3, 4, 3), dict(strides=(2, 3), padding=((1, 2), (2, 1)),
                                      transpose_kernel=True, flip_kernel=True)),
    # The same 4x4, stride-2 form with lax's own (unflipped) kernel.
    ((2, 3, 4, 8), (4, 4, 8, 6), dict(strides=(2, 2), padding=((2, 2), (2, 2)))),
    # ...with enough input channels for Winograd on its shared windows.
    ((2, 5, 6, 16), (4, 4, 16, 6), dict(strides=(2, 2), padding=((2, 2), (2, 2)),
                                        flip_kernel=True)),
]


# The size rules by which 'winograd' (the CPU default) leaves convs to XLA (see conv.py).
_DEFAULT_SIZE_RULES = {"_IM2COL_MIN_OUT_CHANNELS": conv._IM2COL_MIN_OUT_CHANNELS,
                       "_IM2COL_MAX_OUTPUT_PIXELS": conv._IM2COL_MAX_OUTPUT_PIXELS,
                       "_SHARED_WINDOW_MIN_PIXELS": conv._SHARED_WINDOW_MIN_PIXELS,
                       "_WINOGRAD_MIN_OUTPUT_PIXELS": conv._WINOGRAD_MIN_OUTPUT_PIXELS}


@pytest.fixture(autouse=True)
def _custom_forms_for_small_convs(monkeypatch):
  """The test shapes are tiny: make every impl use its own forms on them, not XLA's fallback."""
  monkeypatch.setattr(conv, "_MIN_CUSTOM_FLOPS", 0.0)
  monkeypatch.setattr(conv, "_IM2COL_MIN_OUT_CHANNELS", 0)
  monkeypatch.setattr(conv, "_IM2COL_MAX_OUTPUT_PIXELS", 10**9)
  monkeypatch.setattr(conv, "_SHARED_WINDOW_MIN_PIXELS", 0)
  monkeypatch.setattr(conv, "_WINOGRAD_MIN_OUTPUT_PIXELS", 0)


def _random(shape, seed):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


# The cases where an impl differs from lax ('subpixel' only changes transposed convs; 'winograd'
# differs from 'im2col' only where Winograd applies or is refused: few channels, odd sizes).
IMPL_CASES = {
    "xla": tuple(range(len(CONV_CASES) + len(TRANSPOSE_CASES))),
    "subpixel": tuple(range(len(CONV_CASES), len(CONV_CASES) + len(TRANSPOSE_CASES))),
    "im2col": tuple(range(len(CONV_CASES) + len(TRANSPOSE_CASES))),
    "winograd": (0, 3, 4, 6, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, len(CONV_CASES),
                 len(CONV_CASES) + 6, len(CONV_CASES) + 9, len(CONV_CASES) + 10),
}


def _cases(indices):
  cases = []
  for i in indices:
    if i < len(CONV_CASES):
      (x_shape, k_shape, kwargs), fn = CONV_CASES[i], conv.conv2d
    else:
      (x_shape, k_shape, kwargs), fn = TRANSPOSE_CASES[i - len(CONV_CASES)], conv.conv_transpose2d
    cases.append((functools.partial(fn, **kwargs), _random(x_shape, 2 * i),
                  _random(k_shape, 2 * i + 1)))
  return cases


@functools.lru_cache(maxsize=None)
def _values_and_grads(impl, indices):
  """{case: (y, dL/dx, dL/dkernel)} for one impl, all cases in one compiled function."""
  cases = _cases(indices)

  def run(xs, ks):
    out = []
    for (fn, _, _), x, k in zip(cases, xs, ks):
      y, vjp = jax.vjp(lambda a, b, fn=fn: fn(a, b, impl=impl), x, k)
      # A cotangent that is not all ones, so that a misplaced gradient cannot cancel out.
      cotangent = jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)
      out.append((y, *vjp(cotangent)))
    return out

  xs, ks = [c[1] for c in cases], [c[2] for c in cases]
  return dict(zip(indices, jax.device_get(_jit(run)(xs, ks))))


def _assert_close(actual, expected, what):
  scale = float(np.max(np.abs(expected))) or 1.0
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=2e-5 * scale, err_msg=what)


@pytest.mark.parametrize("impl", IMPLS)
def test_values_and_gradients_match_lax(impl):
  assert set(IMPLS) == set(IMPL_CASES) - {"xla"}
  reference = _values_and_grads("xla", IMPL_CASES["xla"])
  for i, got in _values_and_grads(impl, IMPL_CASES[impl]).items():
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), got, reference[i]):
      assert a.shape == b.shape, (impl, i, name)
      _assert_close(a, b, f"{impl}, case {i}: {name}")


def test_transposed_convs_with_few_outputs_match_lax(monkeypatch):
  """Under the default size rules transposed convs with few output channels (every case here)
  are col2im(x @ kernel). The dilated one and the one with a stride above its kernel size
  (output rows no tap reaches) are left to the phase-by-phase form."""
  monkeypatch.setattr(conv, "_IM2COL_MIN_OUT_CHANNELS",
                      _DEFAULT_SIZE_RULES["_IM2COL_MIN_OUT_CHANNELS"])
  scattered = []
  original = conv._conv_transpose_scatter
  monkeypatch.setattr(conv, "_conv_transpose_scatter",
                      lambda *args: scattered.append(args[1].shape) or original(*args))
  indices = tuple(range(len(CONV_CASES), len(CONV_CASES) + len(TRANSPOSE_CASES)))
  reference = _values_and_grads("xla", indices)
  got = _values_and_grads.__wrapped__("im2col", indices)
  assert len(scattered) == len(TRANSPOSE_CASES) - 2
  for i in indices:
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), got[i], reference[i]):
      assert a.shape == b.shape, (i, name)
      _assert_close(a, b, f"scattered transposed conv, case {i}: {name}")


def test_4x4_stride2_transposed_convs_phase_by_phase_match_lax(monkeypatch):
  """On small maps torch's 4x4, stride-2 transposed conv is computed phase by phase (the other
  tests compute it as one shared-window conv)."""
  monkeypatch.setattr(conv, "_SHARED_WINDOW_MIN_PIXELS", 10**9)
  shared = []
  original = conv._conv_transpose_4x4_stride2
  monkeypatch.setattr(conv, "_conv_transpose_4x4_stride2",
                      lambda *args: shared.append(1) or original(*args))
  indices = tuple(len(CONV_CASES) + i for i, (_, k_shape, kwargs) in enumerate(TRANSPOSE_CASES)
                  if k_shape[:2] == (4, 4) and kwargs["strides"] == (2, 2))
  assert len(indices) == 5
  reference = _values_and_grads("xla", indices)
  for impl in ("im2col", "winograd"):
    got = _values_and_grads.__wrapped__(impl, indices)
    for i in indices:
      for name, a, b in zip(("output", "input gradient", "kernel gradient"), got[i], reference[i]):
        _assert_close(a, b, f"{impl} phase by phase, case {i}: {name}")
  assert not shared


def test_winograd_computes_pix2pix_kernels(monkeypatch):
  """4x4 (stride 1 and 2) and 2x2 convs, and the shared windows of 4x4, stride-2 transposed
  convs, go through Winograd with the kernel size r they need; only from
  _WINOGRAD_MIN_OUTPUT_PIXELS output pixels on under the default rules."""
  kernel_sizes = []
  original = conv._winograd_conv
  monkeypatch.setattr(conv, "_winograd_conv",
                      lambda x, k, pads: kernel_sizes.append(k.shape[0]) or original(x, k, pads))
  for fn, x, k in _cases((15, 16, 17, 18, len(CONV_CASES) + 10)):
    jax.eval_shape(functools.partial(fn, impl="winograd"), x, k)
  assert kernel_sizes == [4, 2, 2, 2, 2]
  monkeypatch.setattr(conv, "_WINOGRAD_MIN_OUTPUT_PIXELS",
                      _DEFAULT_SIZE_RULES["_WINOGRAD_MIN_OUTPUT_PIXELS"])
  kernel_sizes.clear()
  for x_shape, k_shape, kwargs in (((1, 16, 16, 256), (4, 4, 256, 512), dict(padding=1)),
                                   ((1, 8, 8, 256), (4, 4, 256, 512), dict(padding=1)),
                                   ((1, 64, 64, 64), (4, 4, 64, 128), dict(strides=2, padding=1)),
                                   ((1, 16, 16, 256), (4, 4, 256, 512),
                                    dict(strides=2, padding=1))):
    jax.eval_shape(functools.partial(conv.conv2d, impl="winograd", **kwargs),
                   jax.ShapeDtypeStruct(x_shape, jnp.float32),
                   jax.ShapeDtypeStruct(k_shape, jnp.float32))
  assert kernel_sizes == [4, 2]  # 15x15 and 32x32 outputs; not 7x7 or 8x8


def test_winograd_matrices_give_exact_small_correlations():
  """A^T [(G g) * (B^T d)] is the m-output correlation of d with g, for every F(m, r)."""
  rng = np.random.default_rng(0)
  for (m, r), (bt, g, at) in conv._WINOGRAD.items():
    d, taps = rng.standard_normal(m + r - 1), rng.standard_normal(r)
    want = [np.dot(d[i:i + r], taps) for i in range(m)]
    np.testing.assert_allclose(at @ ((g @ taps) * (bt @ d)), want, rtol=1e-12,
                               err_msg=str((m, r)))


def test_every_winograd_tile_size_matches_lax():
  """Each F(m x m, r x r) as a whole conv (odd sizes: partial tiles; asymmetric pads), values and
  gradients, whatever `_winograd_matrices` would pick for the shape."""
  x = _random((2, 8, 7, 16), 0)
  cases = {(m, r): (_random((r, r, 16, 5), m * 10 + r), ((1, r - 2), (r - 1, 0)))
           for m, r in conv._WINOGRAD}

  def run(x, kernels):
    out = {}
    for (m, r), kernel in kernels.items():
      pads = cases[(m, r)][1]
      for name, fn in (("winograd", lambda a, b, m=m, r=r, pads=pads: conv._winograd_conv(
          a, b, pads, conv._WINOGRAD[(m, r)])), ("lax", lambda a, b, pads=pads: conv._xla_conv(
              a, b, (1, 1), pads, (1, 1)))):
        y, vjp = jax.vjp(fn, x, kernel)
        out[(m, r, name)] = (y, *vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)))
    return out

  got = jax.device_get(_jit(run)(x, {key: k for key, (k, _) in cases.items()}))
  for m, r in cases:
    for name, a, b in zip(("output", "input gradient", "kernel gradient"),
                          got[(m, r, "winograd")], got[(m, r, "lax")]):
      _assert_close(a, b, f"F({m}, {r}): {name}")


def test_larger_winograd_tiles_where_the_matmuls_keep_rows():
  """F(3, r) for 4x4 kernels from 64 tiles of 3x3, for 2x2 from 256, for 3x3 from 64 on maps of
  16x16 and more; F(2, r) otherwise."""
  pick = lambda r, batch, hw: conv._winograd_matrices(r, batch, hw, hw)[2].shape[0]
  assert [pick(4, 4, 15), pick(4, 1, 15)] == [3, 2]
  assert [pick(2, 4, 32), pick(2, 4, 17)] == [3, 2]
  assert [pick(3, 8, 16), pick(3, 32, 8), pick(3, 1, 16)] == [3, 2, 2]


def test_xla_reference_is_lax_itself():
  """The 'xla' reference is lax's conv, checked against an independent numpy loop."""
  (fn, x, k), = _cases((1,))  # stride 2, padding 1, 3 -> 4 channels
  y = np.asarray(fn(x, k, impl="xla"))
  xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.zeros_like(y)
  for i in range(y.shape[1]):
    for j in range(y.shape[2]):
      window = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      expected[:, i, j] = np.einsum("bhwc,hwco->bo", window, np.asarray(k))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_modules_are_drop_in_for_flax():
  x = _random((2, 9, 8, 3), 0)
  pairs = [
      (nn.Conv(4, (3, 3), strides=2, padding="SAME", use_bias=False),
       conv.Conv(4, (3, 3), strides=2, padding="SAME", use_bias=False, impl="im2col")),
      (nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                        transpose_kernel=True),
       conv.ConvTranspose(5, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                          transpose_kernel=True, impl="subpixel")),
  ]

  @_jit
  def outputs(x):
    out = []
    for flax_module, module in pairs:
      variables = flax_module.init(jax.random.key(0), x)
      assert jax.tree.map(jnp.shape, module.init(jax.random.key(0), x)) == \
          jax.tree.map(jnp.shape, variables)
      out.append((module.apply(variables, x), flax_module.apply(variables, x)))
    return out

  for (flax_module, module), (got, want) in zip(pairs, outputs(x)):
    _assert_close(np.asarray(got), np.asarray(want), type(module).__name__)


def test_resolve_conv_impl():
  assert conv.resolve_conv_impl("auto", "gpu") == "xla"
  assert conv.resolve_conv_impl("auto", "tpu") == "xla"
  assert conv.resolve_conv_impl("auto", "cpu") in conv.CONV_IMPLS
  assert conv.resolve_conv_impl("auto", "cpu") != "auto"
  assert conv.resolve_conv_impl("im2col", "gpu") == "im2col"
  with pytest.raises(ValueError, match="model.conv_impl"):
    conv.resolve_conv_impl("fft")


# ------------------------------------------------------------------------------------------------
# ECCV16 with each lowering and with remat
# ------------------------------------------------------------------------------------------------


def _photo_batch(n=8, size=32):
  photos = sorted(PHOTOS_DIR.iterdir())[:n]
  return np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC))
                   for p in photos])


@functools.lru_cache(maxsize=None)
def _eccv16_logits_and_grads(impl, remat):
  """Logits and parameter gradients of the ECCV16 training loss (soft-encoded CE on photos)."""
  model = eccv16.ECCV16(width=1 / 16, conv_impl=impl, remat=remat)
  variables = _eccv16_variables()
  class_weights = jnp.linspace(0.5, 2.0, color.Q)

  def loss(params, rgb):
    lab = color.rgb_to_lab(rgb)
    logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                            color.normalize_l(lab[..., :1], "eccv16"), train=True,
                            mutable=["batch_stats"])
    return losses.soft_ce(logits, lab[..., 1:], class_weights), logits

  step = _jit(jax.value_and_grad(loss, has_aux=True),
              **xla_cpu.step_compiler_options(remat, "cpu"))
  (_, logits), grads = step(variables["params"], _photo_batch())
  return jax.device_get((logits, grads))


@functools.lru_cache(maxsize=None)
def _eccv16_variables():
  model = eccv16.ECCV16(width=1 / 16, conv_impl="xla")
  init = _jit(functools.partial(model.init, train=False))
  return init(jax.random.key(0, impl="unsafe_rbg"), jnp.zeros((1, 32, 32, 1)))


def test_eccv16_gives_xla_logits_and_gradients():
  """Logits and gradients of the training loss on photos, with the fastest CPU form."""
  impl = "winograd"
  logits, grads = _eccv16_logits_and_grads(impl, False)
  ref_logits, ref_grads = _eccv16_logits_and_grads("xla", False)
  _assert_close(logits, ref_logits, "logits")
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    ref = ref_grads
    for key in path:
      ref = ref[key.key]
    scale = float(np.max(np.abs(ref))) or 1.0
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=2e-4 * scale, err_msg=str(path))


@functools.lru_cache(maxsize=None)
def _train_step_metrics(impl):
  """Metrics of one `colorjax.train` step of the tiny ECCV16 recipe on photos, on one device."""
  config = config_lib.load_config("eccv16:tiny")
  config.model.conv_impl = impl
  mesh = sharding.create_mesh(1)
  with conftest.users_codegen():
    trainer = train.build(config, mesh, np.linspace(0.5, 2.0, color.Q).astype(np.float32))
    state, step = trainer.state, trainer.step_fn(adversarial=False)
    _, metrics = step(state, sharding.shard_batch({"rgb": _photo_batch()}, mesh))
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def test_train_step_gradient_norm_matches_xla():
  """The real compiled train step with the CPU default, compiled as users compile it (a YNNPACK
  fusion of the first conv's im2col matmul once put its gradient norm 0.7% off; 'im2col' shared
  that path; the suite's fast-compile level does so again on some CPUs, see conftest.py)."""
  got, want = _train_step_metrics("winograd"), _train_step_metrics("xla")
  np.testing.assert_allclose(got["train/loss"], want["train/loss"], rtol=1e-5)
  np.testing.assert_allclose(got["train/grad_norm"], want["train/grad_norm"], rtol=1e-4)


@functools.lru_cache(maxsize=None)
def _pix2pix_outputs_and_grads(impl):
  """U-Net output and PatchGAN logits on photos, and the gradients of a loss on both."""
  from colorjax.models import patchgan, unet  # pylint: disable=g-import-not-at-top
  gen = unet.UNetGenerator(ngf=32, num_downs=5, use_dropout=False, conv_impl=impl)
  disc = patchgan.PatchGANDiscriminator(ndf=32, n_layers=3, conv_impl=impl)
  lab = color.rgb_to_lab(jnp.asarray(_photo_batch(n=2)))
  l_norm = color.normalize_l(lab[..., :1], "pix2pix")
  init = lambda module, x: _jit(functools.partial(module.init, train=False))(
      jax.random.key(0, impl="unsafe_rbg"), x)
  gen_vars = init(unet.UNetGenerator(ngf=32, num_downs=5, use_dropout=False), l_norm)
  disc_vars = init(patchgan.PatchGANDiscriminator(ndf=32, n_layers=3),
                   jnp.zeros(l_norm.shape[:3] + (3,)))

  def loss(gen_params, disc_params):
    ab, _ = gen.apply({**gen_vars, "params": gen_params}, l_norm, train=True,
                      mutable=["batch_stats"])
    logits, _ = disc.apply({**disc_vars, "params": disc_params},
                           jnp.concatenate([l_norm, ab], axis=-1), train=True,
                           mutable=["batch_stats"])
    return jnp.sum(jnp.sin(3.0 * logits)) + jnp.sum(jnp.abs(ab - 0.1)), (ab, logits)

  (_, outputs), grads = _jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(
      gen_vars["params"], disc_vars["params"])
  return jax.device_get((outputs, grads))


def test_pix2pix_models_give_xla_outputs_and_gradients(monkeypatch):
  """U-Net + PatchGAN with the CPU default: im2col for the small maps (dropped dead taps at the
  innermost levels, flipped-kernel transposed-conv phases), XLA for the rest (default rules)."""
  for name, value in _DEFAULT_SIZE_RULES.items():
    monkeypatch.setattr(conv, name, value)
  (outputs, grads), (ref_outputs, ref_grads) = (_pix2pix_outputs_and_grads("winograd"),
                                                _pix2pix_outputs_and_grads("xla"))
  for got, want, what in zip(outputs, ref_outputs, ("U-Net output", "PatchGAN logits")):
    _assert_close(got, want, what)
  for (path, g), ref in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree_util.tree_leaves(ref_grads)):
    scale = float(np.max(np.abs(ref))) or 1.0
    np.testing.assert_allclose(g, ref, rtol=1e-3, atol=2e-4 * scale, err_msg=str(path))


def test_eccv16_remat_gives_identical_gradients():
  logits, grads = _eccv16_logits_and_grads("xla", True)
  ref_logits, ref_grads = _eccv16_logits_and_grads("xla", False)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)
  for g, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)
  # The same parameter tree: checkpoints do not depend on remat.
  assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)


def test_remat_lowers_the_backward_memory():
  """remat keeps only block inputs for the backward pass: fewer live bytes in the grad program
  (on CPU with `xla_cpu.step_compiler_options`, without which XLA merges the recomputation back)."""
  l_norm = jax.ShapeDtypeStruct((4, 64, 64, 1), jnp.float32)

  def temp_bytes(remat):
    model = eccv16.ECCV16(width=1 / 8, conv_impl="xla", remat=remat)
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                              l_norm)

    def loss(params, batch_stats, x):
      logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                              mutable=["batch_stats"])
      return jnp.sum(logits)

    options = xla_cpu.step_compiler_options(remat, "cpu")
    compiled = _jit(jax.grad(loss), **options).lower(
        abstract["params"], abstract["batch_stats"], l_norm).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  assert temp_bytes(True) < 0.6 * temp_bytes(False)
