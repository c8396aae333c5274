"""Tests for the PatchGAN discriminator against plain-PyTorch pix2pix discriminators."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn as tnn

from unet_test import assert_matches_torch, torch_nhwc
from colorjax.models.patchgan import PatchGANDiscriminator


def torch_n_layer_discriminator(in_nc, ndf, n_layers):
  """pix2pix's 'basic' / 'n_layers' discriminator with BatchNorm, as a flat Sequential."""
  layers = [tnn.Conv2d(in_nc, ndf, 4, 2, 1), tnn.LeakyReLU(0.2)]
  mult = 1
  for n in range(1, n_layers + 1):
    prev, mult = mult, min(2**n, 8)
    stride = 2 if n < n_layers else 1
    layers += [tnn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
               tnn.BatchNorm2d(ndf * mult), tnn.LeakyReLU(0.2)]
  layers.append(tnn.Conv2d(ndf * mult, 1, 4, 1, 1))
  return tnn.Sequential(*layers)


def torch_pixel_discriminator(in_nc, ndf):
  return tnn.Sequential(
      tnn.Conv2d(in_nc, ndf, 1), tnn.LeakyReLU(0.2),
      tnn.Conv2d(ndf, 2 * ndf, 1, bias=False), tnn.BatchNorm2d(2 * ndf), tnn.LeakyReLU(0.2),
      tnn.Conv2d(2 * ndf, 1, 1, bias=False))


def as_np(t):
  return t.detach().numpy().copy()


def flax_variables_from_sequential(seq):
  """conv_i / norm_i numbered by convolution, as PatchGANDiscriminator names them."""
  params, stats, index = {}, {}, -1
  gen = torch.Generator().manual_seed(1)
  for layer in seq:
    if isinstance(layer, tnn.Conv2d):
      index += 1
      params[f"conv_{index}"] = {"kernel": as_np(layer.weight.permute(2, 3, 1, 0))}
      if layer.bias is not None:
        layer.bias.data = 0.1 * torch.randn(layer.bias.shape, generator=gen)
        params[f"conv_{index}"]["bias"] = as_np(layer.bias)
    elif isinstance(layer, tnn.BatchNorm2d):
      n = layer.num_features
      layer.weight.data = 1 + 0.3 * torch.randn(n, generator=gen)
      layer.bias.data = 0.3 * torch.randn(n, generator=gen)
      layer.running_mean.data = 0.3 * torch.randn(n, generator=gen)
      layer.running_var.data = 0.5 + torch.rand(n, generator=gen)
      params[f"norm_{index}"] = {"scale": as_np(layer.weight), "bias": as_np(layer.bias)}
      stats[f"norm_{index}"] = {"mean": as_np(layer.running_mean), "var": as_np(layer.running_var)}
  return {"params": params, "batch_stats": stats}


def abstract_variables(model, size, **kwargs):
  x = jnp.zeros((1, size, size, 3))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False, **kwargs))


def random_variables(model, x, seed=0, **kwargs):
  """Random variables of the model's shapes, drawn with numpy (no per-shape XLA compilation).

  Kernels ~ N(0, 1/fan_in) keep activations O(1), so outputs react to every input.
  """
  abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False, **kwargs))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = rng.normal(size=leaf.shape).astype(np.float32)
    name = path[-1].key
    if name == "kernel":
      return noise / float(np.sqrt(np.prod(leaf.shape[:-1])))
    if name in ("scale", "var"):
      return (1 + 0.2 * np.abs(noise)).astype(np.float32)
    return 0.1 * noise
  return jax.tree_util.tree_map_with_path(draw, abstract)


def param_count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("n_layers", [3, 0, 1, 5])
def test_param_count_matches_pix2pix(n_layers):
  with torch.device("meta"):
    ref = (torch_pixel_discriminator(3, 64) if n_layers == 0
           else torch_n_layer_discriminator(3, 64, n_layers))
  count = param_count(abstract_variables(PatchGANDiscriminator(n_layers=n_layers), 256)["params"])
  assert count == sum(p.numel() for p in ref.parameters())
  if n_layers == 3:
    assert count == 2_765_633


def test_patch_grid_of_70x70_discriminator():
  model = PatchGANDiscriminator()
  x = jnp.zeros((2, 256, 256, 3))
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, train=False)[0])
  assert out.shape == (2, 30, 30, 1)


@pytest.mark.parametrize("n_layers", [3, 0])
def test_matches_torch_reference(n_layers):
  torch.manual_seed(0)
  ref = (torch_pixel_discriminator(3, 4) if n_layers == 0
         else torch_n_layer_discriminator(3, 4, n_layers))
  variables = flax_variables_from_sequential(ref)
  model = PatchGANDiscriminator(ndf=4, n_layers=n_layers)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  assert_matches_torch(ref, model, variables, abstract_variables(model, 32), x, atol=1e-5,
                       rtol=1e-5)

  ref.train()
  want = torch_nhwc(ref, x)
  got, _ = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))(
      variables, x)
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_semantic_conditioning():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
  semantic = jnp.asarray(rng.normal(size=(2, 5)), jnp.float32)
  plain = PatchGANDiscriminator(ndf=4)
  cond = PatchGANDiscriminator(ndf=4, semantic_channels=5)
  plain_vars = random_variables(plain, x)
  cond_vars = random_variables(cond, x, seed=1, semantic_BC=semantic)
  params = cond_vars["params"]
  assert params["semantic_projection"]["kernel"].shape == (5, 4)
  assert params["conv_3"]["kernel"].shape == (4, 4, 16 + 4, 32)
  cond_apply = jax.jit(functools.partial(cond.apply, train=False))

  # A zero projection contributes zero features: the plain discriminator's logits.
  zeroed = dict(plain_vars["params"])
  conv_3 = np.zeros((4, 4, 20, 32), np.float32)
  conv_3[:, :, :16] = zeroed["conv_3"]["kernel"]
  zeroed["conv_3"] = {"kernel": conv_3}
  zeroed["semantic_projection"] = {"kernel": np.zeros((5, 4), np.float32),
                                   "bias": np.zeros(4, np.float32)}
  np.testing.assert_allclose(
      cond_apply({"params": zeroed, "batch_stats": plain_vars["batch_stats"]}, x,
                 semantic_BC=semantic),
      jax.jit(functools.partial(plain.apply, train=False))(plain_vars, x), atol=1e-5)

  a = cond_apply(cond_vars, x, semantic_BC=semantic)
  b = cond_apply(cond_vars, x, semantic_BC=semantic[::-1])
  assert np.abs(a - b).max() > 1e-2 * np.abs(a).max()

  with pytest.raises(ValueError, match="no semantic_BC"):
    cond_apply(cond_vars, x)
  with pytest.raises(ValueError, match="semantic_channels=0"):
    jax.eval_shape(functools.partial(plain.apply, train=False), plain_vars, x,
                   semantic_BC=semantic)


def test_rejects_too_small_input():
  with pytest.raises(ValueError, match="at least 24x24, got 16x16"):
    abstract_variables(PatchGANDiscriminator(ndf=4), 16)
