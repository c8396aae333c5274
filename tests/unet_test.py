"""Tests for the U-Net generator against a plain-PyTorch pix2pix U-Net written here."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as nn
from torch import nn as tnn

from backbones_test import randomize_batch_norms
from colorjax.models import unet


class TorchUNetLevel(tnn.Module):
  """One recursive level of the pix2pix U-Net (outermost / middle / innermost), in plain torch."""

  def __init__(self, outer_nc, inner_nc, input_nc=None, inner=None, outermost=False,
               dropout=False, skip=True):
    super().__init__()
    input_nc = outer_nc if input_nc is None else input_nc
    self.outermost, self.inner, self.skip = outermost, inner, skip
    self.down_conv = tnn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=False)
    self.down_norm = tnn.BatchNorm2d(inner_nc) if inner is not None and not outermost else None
    up_in = inner_nc * 2 if inner is not None and skip else inner_nc
    self.up_conv = tnn.ConvTranspose2d(up_in, outer_nc, 4, 2, 1, bias=outermost)
    self.up_norm = None if outermost else tnn.BatchNorm2d(outer_nc)
    self.dropout = tnn.Dropout(0.5) if dropout else None

  def forward(self, x):
    y = x if self.outermost else tnn.functional.leaky_relu(x, 0.2)
    y = self.down_conv(y)
    if self.down_norm is not None:
      y = self.down_norm(y)
    if self.inner is not None:
      y = self.inner(y)
    y = self.up_conv(torch.relu(y))
    if self.outermost:
      return torch.tanh(y)
    y = self.up_norm(y)
    if self.dropout is not None:
      y = self.dropout(y)
    return torch.cat([x, y], 1) if self.skip else y


def torch_unet(in_nc, out_nc, num_downs, ngf, dropout=True, skip=True):
  """Returns (model, levels) where levels[i] is the torch level of encoder depth i."""
  levels = [TorchUNetLevel(ngf * 8, ngf * 8, skip=skip)]
  for _ in range(num_downs - 5):
    levels.append(TorchUNetLevel(ngf * 8, ngf * 8, inner=levels[-1], dropout=dropout, skip=skip))
  for mult in (4, 2, 1):
    levels.append(TorchUNetLevel(ngf * mult, ngf * mult * 2, inner=levels[-1], skip=skip))
  levels.append(TorchUNetLevel(out_nc, ngf, input_nc=in_nc, inner=levels[-1], outermost=True,
                               skip=skip))
  return levels[-1], levels[::-1]


def as_np(t):
  return t.detach().numpy().copy()


def bn_variables(bn):
  return ({"scale": as_np(bn.weight), "bias": as_np(bn.bias)},
          {"mean": as_np(bn.running_mean), "var": as_np(bn.running_var)})


def flax_variables_from_torch_unet(levels):
  params, stats = {}, {}
  for i, level in enumerate(levels):
    down = {"conv": {"kernel": as_np(level.down_conv.weight.permute(2, 3, 1, 0))}}
    up = {"conv": {"kernel": as_np(level.up_conv.weight.permute(2, 3, 0, 1))}}
    if level.up_conv.bias is not None:
      up["conv"]["bias"] = as_np(level.up_conv.bias)
    if level.down_norm is not None:
      down["norm"], norm_stats = bn_variables(level.down_norm)
      stats[f"down_{i}"] = {"norm": norm_stats}
    if level.up_norm is not None:
      up["norm"], norm_stats = bn_variables(level.up_norm)
      stats[f"up_{i}"] = {"norm": norm_stats}
    params[f"down_{i}"], params[f"up_{i}"] = down, up
  return {"params": params, "batch_stats": stats}


def param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def abstract_variables(model, size, channels=1, width=None, **kwargs):
  x = jnp.zeros((1, size, width or size, channels))
  return jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False,
                                           **kwargs))


def init_variables(model, x, seed=0, **kwargs):
  """Random variables of the model's shapes, drawn with numpy (no per-shape XLA compilation).

  Kernels ~ N(0, 1/fan_in) keep activations O(1) at any width, so outputs react to every input.
  """
  abstract = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, train=False,
                                               **kwargs))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    noise = rng.normal(size=leaf.shape).astype(np.float32)
    if name == "kernel":
      return noise / float(np.sqrt(np.prod(leaf.shape[:-1])))
    if name in ("scale", "var"):
      return (1 + 0.2 * np.abs(noise)).astype(np.float32)
    if name == "gamma":
      return np.float32(0.5)
    return 0.1 * noise
  return jax.tree_util.tree_map_with_path(draw, abstract)


def jit_apply(model, **kwargs):
  """model.apply jitted with `kwargs` fixed: one compilation per model and input shape."""
  return jax.jit(functools.partial(model.apply, **kwargs))


def torch_nhwc(ref, x_BHWC):
  """The torch module's output on an NHWC numpy input, as NHWC numpy."""
  return as_np(ref(torch.from_numpy(x_BHWC.transpose(0, 3, 1, 2)))).transpose(0, 2, 3, 1)


def assert_matches_torch(ref, model, variables, abstract, x_BHWC, **tolerance):
  """Asserts that `variables` have the shapes of `abstract` and that `model` (inference mode)
  gives the torch reference's output (eval mode) on `x_BHWC`; returns the model's output."""
  assert jax.tree.map(np.shape, variables) == jax.tree.map(np.shape, abstract)
  ref.eval()
  want = torch_nhwc(ref, x_BHWC)
  got = jit_apply(model, train=False)(variables, x_BHWC)
  np.testing.assert_allclose(got, want, **tolerance)
  return got


def torch_meta_param_count(*args, **kwargs):
  with torch.device("meta"):
    model, _ = torch_unet(*args, **kwargs)
  return sum(p.numel() for p in model.parameters())


def test_num_downs_for_size():
  assert [unet.num_downs_for_size(s) for s in (256, 128, 64, 32)] == [8, 7, 6, 5]
  for bad in (100, 8, 0):
    with pytest.raises(ValueError, match="power of two"):
      unet.num_downs_for_size(bad)


@pytest.mark.parametrize("size", [256, 128])
def test_param_count_matches_pix2pix(size):
  num_downs = unet.num_downs_for_size(size)
  variables = abstract_variables(unet.UNetGenerator(num_downs=num_downs), size)
  count = param_count(variables["params"])
  assert count == torch_meta_param_count(1, 2, num_downs, 64)
  if size == 256:
    assert count == 54_409_858


@pytest.mark.parametrize("method", ["subpixel", "dilated"])
def test_conv_transpose_matches_torch(method):
  torch.manual_seed(0)
  ref = tnn.ConvTranspose2d(3, 4, 4, 2, 1, bias=True)
  ref.bias.data.normal_()
  x = torch.randn(2, 3, 5, 7)
  want = as_np(ref(x)).transpose(0, 2, 3, 1)
  layer = unet.ConvTranspose4x4Stride2(4, use_bias=True, method=method)
  params = {"kernel": as_np(ref.weight.permute(2, 3, 0, 1)), "bias": as_np(ref.bias)}
  got = layer.apply({"params": params}, jnp.asarray(as_np(x).transpose(0, 2, 3, 1)))
  assert got.shape == (2, 10, 14, 4)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("out_channels,skip", [(2, True), (3, False)])
def test_matches_torch_reference(out_channels, skip):
  torch.manual_seed(0)
  ref, levels = torch_unet(1, out_channels, num_downs=5, ngf=4, skip=skip)
  randomize_batch_norms(ref, spread=0.3)
  variables = flax_variables_from_torch_unet(levels)
  model = unet.UNetGenerator(out_channels=out_channels, ngf=4, num_downs=5,
                             skip_connections=skip)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
  got = assert_matches_torch(ref, model, variables, abstract_variables(model, 32), x, atol=1e-5)
  assert got.shape == (2, 32, 32, out_channels)

  if skip:  # Training mode: batch statistics and the running-mean update (torch momentum 0.1).
    ref.train()
    want = torch_nhwc(ref, x)
    got, updates = jit_apply(model, train=True, mutable=["batch_stats"])(variables, x)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(updates["batch_stats"]["down_2"]["norm"]["mean"],
                               as_np(levels[2].down_norm.running_mean), atol=1e-5)


def active_dropout_blocks(model, x, train):
  """Names of the blocks whose Dropout is active (traced abstractly: nothing is compiled)."""
  active = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
      deterministic = kwargs.get("deterministic", context.module.deterministic)
      assert context.module.rate == 0.5
      if not deterministic:
        active.append(context.module.parent.name)
    return next_fun(*args, **kwargs)

  key = jax.random.key(0)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, x, train=train))
  return active


@pytest.mark.parametrize("num_downs,expected",
                         [(8, ["up_6", "up_5", "up_4"]), (7, ["up_5", "up_4"]), (5, [])])
def test_dropout_sits_in_inner_decoder_blocks(num_downs, expected):
  model = unet.UNetGenerator(ngf=2, num_downs=num_downs)
  x = jnp.zeros((1, 2**num_downs, 2**num_downs, 1))
  assert active_dropout_blocks(model, x, train=True) == expected
  assert active_dropout_blocks(model, x, train=False) == []
  assert active_dropout_blocks(model.clone(use_dropout=False), x, train=True) == []


def test_dropout_is_random_in_training_only():
  model = unet.UNetGenerator(ngf=2, num_downs=6)
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 1)), jnp.float32)
  variables = init_variables(model, x)
  train = jax.jit(lambda rng: model.apply(variables, x, train=True, rngs={"dropout": rng},
                                          mutable=["batch_stats"])[0])
  assert np.abs(train(jax.random.key(1)) - train(jax.random.key(2))).max() > 1e-3
  np.testing.assert_array_equal(train(jax.random.key(1)), train(jax.random.key(1)))


def numpy_self_attention(x, p, pool):
  b, h, w, c = x.shape
  q = x @ p["query"]["kernel"][0, 0]
  k = x @ p["key"]["kernel"][0, 0]
  v = x @ p["value"]["kernel"][0, 0]
  if pool:
    k = k.reshape(b, h // 2, 2, w // 2, 2, -1).max(axis=(2, 4))
    v = v.reshape(b, h // 2, 2, w // 2, 2, -1).max(axis=(2, 4))
  q, k, v = q.reshape(b, h * w, -1), k.reshape(b, -1, k.shape[-1]), v.reshape(b, -1, v.shape[-1])
  logits = q @ k.transpose(0, 2, 1)
  attn = np.exp(logits - logits.max(-1, keepdims=True))
  attn /= attn.sum(-1, keepdims=True)
  out = (attn @ v).reshape(b, h, w, -1) @ p["out"]["kernel"][0, 0]
  return x + p["gamma"] * out


@pytest.mark.parametrize("shape,pooled", [((2, 4, 6, 16), True), ((1, 3, 5, 16), False)])
def test_self_attention_matches_numpy(shape, pooled):
  layer = unet.SelfAttention()
  x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
  initial = jax.jit(layer.init)(jax.random.key(3), x)["params"]
  apply = jax.jit(layer.apply)
  # SAGAN starts as the identity: gamma is initialised to 0.
  np.testing.assert_allclose(apply({"params": initial}, x), x, atol=1e-6)
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(np.float32), initial)
  params["gamma"] = np.float32(0.7)
  got = apply({"params": params}, x)
  np.testing.assert_allclose(got, numpy_self_attention(x, params, pooled), atol=1e-4, rtol=1e-4)


def test_attention_levels():
  model = unet.UNetGenerator(ngf=4, num_downs=5, attention=(2, 4))
  variables = abstract_variables(model, 32)
  assert {"attention_2", "attention_4"} <= set(variables["params"])
  assert variables["params"]["attention_2"]["out"]["kernel"].shape == (1, 1, 4, 8)
  with pytest.raises(ValueError, match="attention levels"):
    abstract_variables(unet.UNetGenerator(ngf=4, num_downs=5, attention=(5,)), 32)


def test_space_to_depth_matches_loop():
  x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
  got = np.asarray(unet.space_to_depth(jnp.asarray(x), 2))
  want = np.zeros((2, 2, 3, 12), np.float32)
  for i in range(2):
    for j in range(3):
      want[:, i, j] = np.concatenate([x[:, 2 * i + dy, 2 * j + dx] for dy in (0, 1)
                                      for dx in (0, 1)], axis=-1)
  np.testing.assert_array_equal(got, want)


def embed_plain_params(plain, extended, zero_extra):
  """`extended` (the plain tree plus extra input channels) holding `plain`'s values; with
  `zero_extra`, the weights of the extra input channels are zero."""
  def copy(path, ext):
    keys = tuple(k.key for k in path)
    node = plain
    for k in keys:
      if k not in node:
        return ext
      node = node[k]
    if node.shape == ext.shape:
      return node
    out = np.asarray(ext).copy()
    out[..., :node.shape[-2], :] = node
    if zero_extra:
      out[..., node.shape[-2]:, :] = 0
    return out
  return jax.tree_util.tree_map_with_path(copy, extended)


def test_multiscale_inputs_only_add_input_channels():
  x = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 16, 16, 1)), jnp.float32)
  plain = unet.UNetGenerator(ngf=4, num_downs=3)
  multi = plain.clone(multiscale_inputs=True)
  plain_vars = init_variables(plain, x)
  multi_vars = init_variables(multi, x, seed=1)
  assert multi_vars["params"]["down_0"]["conv"]["kernel"].shape == (4, 4, 5, 4)
  assert multi_vars["params"]["down_1"]["conv"]["kernel"].shape == (4, 4, 5, 8)
  assert (param_count(multi_vars["params"]) - param_count(plain_vars["params"])
          == 16 * 4 * 4 + 16 * 1 * 8)
  plain_out = jit_apply(plain, train=False)(plain_vars, x)
  multi_apply = jit_apply(multi, train=False)
  zeroed = {"params": embed_plain_params(plain_vars["params"], multi_vars["params"], True),
            "batch_stats": plain_vars["batch_stats"]}
  np.testing.assert_allclose(multi_apply(zeroed, x), plain_out, atol=1e-5)
  mixed = {"params": embed_plain_params(plain_vars["params"], multi_vars["params"], False),
           "batch_stats": plain_vars["batch_stats"]}
  assert np.abs(multi_apply(mixed, x) - plain_out).max() > 1e-2


def test_semantic_conditioning():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 16, 16, 1)), jnp.float32)
  semantic = jnp.asarray(rng.normal(size=(2, 6)), jnp.float32)
  plain = unet.UNetGenerator(ngf=4, num_downs=3)
  cond = plain.clone(semantic_channels=6)
  plain_vars = init_variables(plain, x)
  cond_vars = init_variables(cond, x, seed=1, semantic_BC=semantic)
  assert cond_vars["params"]["semantic_fusion"]["kernel"].shape == (1, 1, 16 + 6, 16)
  # An identity fusion over the encoder part and zeros over the embedding is the plain model.
  params = dict(plain_vars["params"])
  fusion = np.zeros((1, 1, 22, 16), np.float32)
  fusion[0, 0, :16, :16] = np.eye(16)
  params["semantic_fusion"] = {"kernel": fusion, "bias": np.zeros(16, np.float32)}
  variables = {"params": params, "batch_stats": plain_vars["batch_stats"]}
  cond_apply = jit_apply(cond, train=False)
  np.testing.assert_allclose(cond_apply(variables, x, semantic_BC=semantic),
                             jit_apply(plain, train=False)(plain_vars, x), atol=1e-5)
  a = cond_apply(cond_vars, x, semantic_BC=semantic)
  b = cond_apply(cond_vars, x, semantic_BC=semantic[::-1])
  assert np.abs(a - b).max() > 1e-4  # float noise here is ~1e-7
  with pytest.raises(ValueError, match="no semantic_BC"):
    cond_apply(cond_vars, x)
  with pytest.raises(ValueError, match=r"shape \(batch, 6\)"):
    cond_apply(cond_vars, x, semantic_BC=semantic[:, :5])
  with pytest.raises(ValueError, match="semantic_channels=0"):
    jax.eval_shape(functools.partial(plain.apply, train=False), plain_vars, x, semantic_BC=semantic)


def test_bfloat16_compute_float32_params():
  x = jnp.asarray(np.random.default_rng(6).uniform(-1, 1, (2, 16, 16, 1)), jnp.float32)
  model = unet.UNetGenerator(ngf=4, num_downs=3, attention=(1,))
  low_model = model.clone(dtype=jnp.bfloat16)
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(abstract_variables(low_model, 16)["params"]))
  variables = init_variables(model, x)
  low = jit_apply(low_model, train=False)(variables, x)
  assert low.dtype == jnp.bfloat16
  full = jit_apply(model, train=False)(variables, x)
  np.testing.assert_allclose(np.asarray(low, np.float32), full, atol=5e-2)


def test_rgb_head_and_size_errors():
  model = unet.UNetGenerator(out_channels=3, ngf=4, num_downs=3, output_activation="sigmoid")
  x = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, (1, 16, 16, 1)), jnp.float32)
  variables = init_variables(model, x)
  out = jit_apply(model, train=False)(variables, x)
  assert out.shape == (1, 16, 16, 3)
  assert float(out.min()) > 0 and float(out.max()) < 1
  with pytest.raises(ValueError, match="divisible by 8, got 24x20"):
    abstract_variables(model, 24, width=20)


def test_encoder_dropout_follows_each_encoder_batch_norm():
  # Report 001's model 1: Dropout(0.5) after every encoder BatchNorm (levels 1 .. n-2 here).
  block = unet.DownBlock(8, dropout_rate=0.5)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 16, 4)), jnp.float32)
  variables = block.init(jax.random.key(0), x, train=False)
  apply = lambda rate, train, rng: block.clone(dropout_rate=rate).apply(
      variables, x, train=train, rngs={"dropout": rng}, mutable=["batch_stats"])[0]
  plain = np.asarray(apply(0.0, True, jax.random.key(1)))
  dropped = np.asarray(apply(0.5, True, jax.random.key(1)))
  kept = dropped != 0
  assert 0.4 < kept.mean() < 0.6
  np.testing.assert_allclose(dropped[kept], 2.0 * plain[kept], rtol=1e-5)  # inverted dropout
  np.testing.assert_array_equal(apply(0.5, False, jax.random.key(1)),
                                apply(0.0, False, jax.random.key(1)))

  model = unet.UNetGenerator(ngf=2, num_downs=5, use_dropout=False, skip_connections=False,
                             encoder_dropout=0.5)
  x = jnp.zeros((1, 32, 32, 1))
  assert active_dropout_blocks(model, x, train=True) == ["down_1", "down_2", "down_3"]
  assert active_dropout_blocks(model, x, train=False) == []
