"""The training steps of colorjax's ECCV16 and pix2pix recipes, written in PyTorch for comparison.

Same layers, shapes, losses and optimisers as the colorjax steps, and the same work inside the
step: uint8 RGB in, Lab conversion, normalisation (and for ECCV16 the soft encoding onto the 5
nearest of the 313 bins with sigma 5, rebalancing weights and gray masking) on the fly.

  step = make_eccv16_step()                        # ECCV16 at width 1.0, Adam(0.9, 0.99), wd 1e-3
  step = make_pix2pix_step(image_size=128)         # U-Net (log2(size) downs, ngf 64) + PatchGAN
  loss = step(rgb_uint8_BHW3)                      # one optimisation step on a numpy batch

`channels_last=True` runs the convs in NHWC, `fused_adam=True` torch's single-kernel Adam (the
default is its per-parameter loop). Requires torch (the CPU build is enough); colorjax itself
never imports this module.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from colorjax import color
from colorjax.models import backbones

# ------------------------------------------------------------------------------------------------
# Color (the formulas of colorjax.color, in torch)
# ------------------------------------------------------------------------------------------------

_D65_WHITE = (0.95047, 1.0, 1.08883)
_XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                 (0.212671, 0.715160, 0.072169),
                 (0.019334, 0.119193, 0.950227))


def rgb_to_lab(rgb_uint8_BHW3: torch.Tensor) -> torch.Tensor:
  """uint8 sRGB (B, H, W, 3) -> float32 Lab (B, H, W, 3), D65, as colorjax.color.rgb_to_lab."""
  rgb = rgb_uint8_BHW3.float() / 255.0
  linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  matrix = torch.tensor(_XYZ_FROM_RGB).T / torch.tensor(_D65_WHITE)
  xyz = linear @ matrix
  f = torch.where(xyz > 0.008856, torch.clamp(xyz, min=0.008856) ** (1.0 / 3.0),
                  7.787 * xyz + 16.0 / 116.0)
  l = 116.0 * f[..., 1:2] - 16.0
  a = 500.0 * (f[..., 0:1] - f[..., 1:2])
  b = 200.0 * (f[..., 1:2] - f[..., 2:3])
  return torch.cat([l, a, b], dim=-1)


# ------------------------------------------------------------------------------------------------
# ECCV16
# ------------------------------------------------------------------------------------------------


def _conv_relu(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
  return [nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation),
          nn.ReLU(inplace=True)]


class ECCV16Torch(nn.Module):
  """The ECCV16 network of the public release: normalised L (B,1,H,W) -> 313 logits at H/4;
  `width` scales every hidden layer's channels as colorjax's `ECCV16(width)` does."""

  def __init__(self, width: float = 1.0):
    super().__init__()
    layers: list[nn.Module] = []
    cin = 1
    # (channels, convs, stride of the last conv, dilation), as colorjax.models.eccv16._BLOCKS.
    for base, n_convs, stride, dilation in ((64, 2, 2, 1), (128, 2, 2, 1), (256, 3, 2, 1),
                                            (512, 3, 1, 1), (512, 3, 1, 2), (512, 3, 1, 2),
                                            (512, 3, 1, 1)):
      channels = backbones.scaled_channels(base, width)
      for i in range(n_convs):
        layers += _conv_relu(cin, channels, stride if i == n_convs - 1 else 1, dilation)
        cin = channels
      layers.append(nn.BatchNorm2d(channels))
    up = backbones.scaled_channels(256, width)
    layers += [nn.ConvTranspose2d(cin, up, 4, stride=2, padding=1), nn.ReLU(inplace=True),
               *_conv_relu(up, up), *_conv_relu(up, up), nn.Conv2d(up, color.Q, 1)]
    self.net = nn.Sequential(*layers)

  def forward(self, l_norm_B1HW: torch.Tensor) -> torch.Tensor:
    return self.net(l_norm_B1HW)


def soft_ce_loss(logits_BQhw: torch.Tensor, ab_BHW2: torch.Tensor, class_weights_Q: torch.Tensor,
                 bins_Q2: torch.Tensor, k: int = 5, sigma: float = 5.0) -> torch.Tensor:
  """colorjax.losses.soft_ce in torch: rebalanced soft-encoded CE at the logits' resolution."""
  h, w = logits_BQhw.shape[2:]
  sy, sx = ab_BHW2.shape[1] // h, ab_BHW2.shape[2] // w
  ab = ab_BHW2[:, ::sy, ::sx][:, :h, :w]                                  # (B, h, w, 2)
  d2 = ((ab[..., None, :] - bins_Q2) ** 2).sum(-1)                        # (B, h, w, Q)
  d2_k, idx = torch.topk(d2, k, dim=-1, largest=False)
  weights = torch.exp(-(d2_k - d2_k[..., :1]) / (2.0 * sigma**2))
  weights = weights / weights.sum(-1, keepdim=True)
  target = torch.zeros_like(d2).scatter_(-1, idx, weights)
  pixel_weight = class_weights_Q[idx[..., 0]]
  nongray = (ab_BHW2.abs() > 5.0).flatten(1).any(dim=1).float()
  pixel_weight = pixel_weight * nongray[:, None, None]
  log_p = F.log_softmax(logits_BQhw.float(), dim=1).permute(0, 2, 3, 1)   # (B, h, w, Q)
  ce = -(target * log_p).sum(-1)
  return (ce * pixel_weight).sum() / ce.numel()


# ------------------------------------------------------------------------------------------------
# pix2pix: U-Net generator and PatchGAN discriminator
# ------------------------------------------------------------------------------------------------


class _UNetLevel(nn.Module):
  """One U-Net level around an inner module: down conv, inner, up conv, skip concatenation."""

  def __init__(self, outer: int, inner: int, in_channels: int | None = None,
               submodule: nn.Module | None = None, outermost: bool = False,
               innermost: bool = False, dropout: bool = False, out_channels: int | None = None):
    super().__init__()
    in_channels = outer if in_channels is None else in_channels
    self.outermost = outermost
    down_conv = nn.Conv2d(in_channels, inner, 4, stride=2, padding=1, bias=False)
    if outermost:
      up = nn.ConvTranspose2d(inner * 2, out_channels, 4, stride=2, padding=1)
      layers = [down_conv, submodule, nn.ReLU(True), up, nn.Tanh()]
    elif innermost:
      up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=False)
      layers = [nn.LeakyReLU(0.2, True), down_conv, nn.ReLU(True), up, nn.BatchNorm2d(outer)]
    else:
      up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=False)
      layers = [nn.LeakyReLU(0.2, True), down_conv, nn.BatchNorm2d(inner), submodule,
                nn.ReLU(True), up, nn.BatchNorm2d(outer)]
      if dropout:
        layers.append(nn.Dropout(0.5))
    self.model = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    if self.outermost:
      return self.model(x)
    # Not in place: the skip input x is needed by the level above's backward pass.
    return torch.cat([x, self.model(x)], dim=1)


class UNetTorch(nn.Module):
  """pix2pix `unet_<size>`: `num_downs` 4x4/2 levels, ngf * (1, 2, 4, 8, 8, ...) channels."""

  def __init__(self, num_downs: int, ngf: int = 64, in_channels: int = 1, out_channels: int = 2):
    super().__init__()
    level = _UNetLevel(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
      level = _UNetLevel(ngf * 8, ngf * 8, submodule=level, dropout=True)
    for mult in (4, 2, 1):
      level = _UNetLevel(ngf * mult, ngf * mult * 2, submodule=level)
    self.model = _UNetLevel(out_channels, ngf, in_channels=in_channels, submodule=level,
                            outermost=True, out_channels=out_channels)

  def forward(self, l_B1HW: torch.Tensor) -> torch.Tensor:
    return self.model(l_B1HW)


class PatchGANTorch(nn.Module):
  """pix2pix NLayerDiscriminator (n_layers=3 is the 70x70 PatchGAN) on concat(L, ab)."""

  def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
    super().__init__()
    layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1),
                               nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
      prev, mult = mult, min(2**n, 8)
      stride = 2 if n < n_layers else 1
      layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=False),
                 nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
    self.model = nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.model(x)


# ------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------


def _to_format(module: nn.Module, channels_last: bool) -> nn.Module:
  return module.to(memory_format=torch.channels_last) if channels_last else module


def _input(x_BCHW: torch.Tensor, channels_last: bool) -> torch.Tensor:
  return x_BCHW.contiguous(memory_format=torch.channels_last if channels_last
                           else torch.contiguous_format)


def make_eccv16_step(class_weights_Q: np.ndarray | None = None, *, width: float = 1.0,
                     lr: float = 3e-5, channels_last: bool = False, fused_adam: bool = False,
                     seed: int = 0) -> Callable[[np.ndarray], float]:
  """The ECCV16 train step: `step(rgb_uint8_BHW3) -> loss`, updating the model in place."""
  torch.manual_seed(seed)
  model = _to_format(ECCV16Torch(width), channels_last).train()
  opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-3,
                         fused=fused_adam or None)
  weights = torch.tensor(np.ones(color.Q, np.float32) if class_weights_Q is None
                         else np.asarray(class_weights_Q, np.float32))
  bins = torch.tensor(color.AB_BINS, dtype=torch.float32)

  def step(rgb_uint8_BHW3: np.ndarray) -> float:
    lab = rgb_to_lab(torch.from_numpy(np.asarray(rgb_uint8_BHW3)))
    l_norm = _input(((lab[..., :1] - 50.0) / 100.0).permute(0, 3, 1, 2), channels_last)
    opt.zero_grad(set_to_none=True)
    loss = soft_ce_loss(model(l_norm), lab[..., 1:], weights, bins)
    loss.backward()
    opt.step()
    return loss.detach()

  return step


def make_pix2pix_step(image_size: int, *, ngf: int = 64, ndf: int = 64, n_layers: int = 3,
                      l1_weight: float = 100.0, lr: float = 2e-4, channels_last: bool = False,
                      fused_adam: bool = False, seed: int = 0) -> Callable[[np.ndarray], float]:
  """The pix2pix train step (D then G; BCE GAN loss + l1_weight x L1 on ab/110; D loss halved)."""
  torch.manual_seed(seed)
  num_downs = int(round(math.log2(image_size)))
  gen = _to_format(UNetTorch(num_downs, ngf), channels_last).train()
  disc = _to_format(PatchGANTorch(3, ndf, n_layers), channels_last).train()
  opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999), fused=fused_adam or None)
  opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999), fused=fused_adam or None)
  bce = nn.BCEWithLogitsLoss()

  def step(rgb_uint8_BHW3: np.ndarray) -> float:
    lab = rgb_to_lab(torch.from_numpy(np.asarray(rgb_uint8_BHW3))).permute(0, 3, 1, 2)
    l_norm = _input(lab[:, :1] / 50.0 - 1.0, channels_last)
    ab_real = _input(lab[:, 1:] / 110.0, channels_last)
    fake = gen(l_norm)
    real_pair = torch.cat([l_norm, ab_real], 1)
    fake_pair = torch.cat([l_norm, fake], 1)

    disc.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    pred_fake = disc(fake_pair.detach())
    pred_real = disc(real_pair)
    d_loss = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake))
                    + bce(pred_real, torch.ones_like(pred_real)))
    d_loss.backward()
    opt_d.step()

    disc.requires_grad_(False)  # G's step needs D's input gradient only, as in pix2pix
    opt_g.zero_grad(set_to_none=True)
    pred = disc(fake_pair)
    g_loss = bce(pred, torch.ones_like(pred)) + l1_weight * F.l1_loss(fake, ab_real)
    g_loss.backward()
    opt_g.step()
    return g_loss.detach()

  return step
