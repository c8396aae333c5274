"""Perceptual loss on VGG19 features (seed 000's 'enhanced GAN': GAN + λ·L1 + perceptual).

The distance between a generated and a true color image is measured on the activations of an
ImageNet VGG19 (Simonyan & Zisserman 2015) instead of on pixels: for each tapped ReLU output
(`loss.perceptual_layers`, by default the last ReLU of each of the five stages, relu1_2 ...
relu5_4), the mean absolute difference of the two activations; the loss is the mean over the taps.
Seed 000 names the VGG19 features and the weight 1 of the term but not the layers or the
distance: those are this module's choice.

The network is VGG19 built only up to the stage of the deepest tap (relu2_2 needs two stages, the
default taps all five), in inference mode, with weights that stay constant during training. They
come from a torchvision `vgg19` state_dict file the user supplies
(`torch.save(torchvision.models.vgg19(weights=...).state_dict(), path)`); the whole file is checked
to be a VGG19 before its first stages are kept. `'random'` gives random weights, for tests only.

Usage::

  network = create_network(layers)
  variables = load_variables(weights_path_or_random, layers)
  loss = perceptual_loss(network, variables, rgb_pred_BHW3, rgb_true_BHW3, layers)

Images are sRGB in [0, 1]; the ImageNet normalisation happens inside the network. Gradients flow
to `rgb_pred_BHW3` only.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from colorjax.models import backbones

RANDOM = "random"
WEIGHTS_KEY = "loss.perceptual_weights"


def stages_needed(layers: Sequence[str]) -> int:
  """Number of VGG19 stages that computes every tap in `layers` (names like 'relu3_4')."""
  stages = []
  for name in layers:
    stage, _, conv = name.removeprefix("relu").partition("_")
    if not (name.startswith("relu") and stage.isdigit() and conv.isdigit()
            and 1 <= int(stage) <= 5
            and 1 <= int(conv) <= backbones.VGG19_STAGE_CONVS[int(stage) - 1]):
      raise ValueError(f"{name!r} is not a VGG19 ReLU output (relu1_1 ... relu5_4)")
    stages.append(int(stage))
  if not stages:
    raise ValueError("the perceptual loss needs at least one VGG19 layer")
  return max(stages)


def create_network(layers: Sequence[str], dtype: Any = None) -> nn.Module:
  """VGG19 truncated after the stage of the deepest of `layers` (torchvision parameter names)."""
  n = stages_needed(layers)
  return backbones.VGG(stage_convs=backbones.VGG19_STAGE_CONVS[:n],
                       widths=backbones.VGG_WIDTHS[:n], dtype=dtype)


def load_variables(weights: str | os.PathLike, layers: Sequence[str], *,
                   key: str = WEIGHTS_KEY) -> dict[str, Any]:
  """Variables of `create_network(layers)`: from a torchvision VGG19 file, or 'random' (tests).

  Raises:
    ValueError: `weights` is '' (the message names the config `key`).
    torch_weights.WeightFileError: unreadable file, or not a torchvision VGG19 state_dict.
  """
  weights = os.fspath(weights)
  if not weights:
    raise ValueError(
        f"config key {key} is '' but the perceptual loss is on (loss.perceptual_weight > 0): give "
        "a torchvision vgg19 state_dict file (torch.save(torchvision.models.vgg19(weights=...)"
        ".state_dict(), path)), or set loss.perceptual_weight=0")
  network = create_network(layers)
  init = lambda: network.init(jax.random.key(0, impl="rbg"), jnp.zeros((1, 32, 32, 3)),
                              method="features")
  if weights == RANDOM:
    return jax.device_get(jax.jit(init)())
  full = backbones.backbone_variables_from_file("vgg19", weights)
  kept = jax.eval_shape(init)["params"]
  return {"params": {name: full["params"][name] for name in kept}}


def perceptual_loss(network: nn.Module, variables: Any, rgb_pred_BHW3: jax.Array,
                    rgb_true_BHW3: jax.Array, layers: Sequence[str]) -> jax.Array:
  """Mean over `layers` of the mean |VGG19(pred) - VGG19(true)| at that layer (scalar, float32).

  The mean is over the whole global batch, so the value does not depend on the device count.
  """
  _, pred = network.apply(variables, rgb_pred_BHW3, method="features")
  _, true = network.apply(variables, jax.lax.stop_gradient(rgb_true_BHW3), method="features")
  distances = [jnp.mean(jnp.abs(pred[name].astype(jnp.float32)
                                - jax.lax.stop_gradient(true[name]).astype(jnp.float32)))
               for name in layers]
  return sum(distances) / len(distances)
