"""Seed 004: a U-Net generator with a PatchGAN discriminator in Lab (report 004_*.txt).

"Deep Learning for Image Colorization" (Kešelj & Maksimović) trains a conditional GAN: a U-Net
generator predicting the a and b channels from L, and a PatchGAN discriminator; the poster
reports SSIM 0.67, PSNR 19.48 dB and FID 72.47 on its validation set, and says hardware limits
constrained model size and training resolution. That is all the report states.

Chosen here (the report is silent on every training value): pix2pix's recipe (Isola et al. 2017),
which it cites: unet_256 (ngf 64, 8 levels, dropout), 70x70 PatchGAN, vanilla GAN loss + λ·L1
with λ=100, D loss halved, Adam lr 2e-4 β=(0.5, 0.999) for G and D, `L/50 - 1` and ab/110,
256-px images with flips; batch 16, 50,000 steps at a constant learning rate, no pretraining.
`configs/pix2pix.py` is the published pix2pix schedule (jitter, linear decay).

Variants: `tiny` (tests: 32 px, ngf/ndf 4, 4 steps), `bf16`.

  colorjax train --config seed004_unet_gan --workdir /tmp/seed004 --config.data.train=/path
"""
from colorjax import config as config_lib

_PIX2PIX = config_lib.recipe_module("pix2pix")


def get_config(arg: str | None = None):
  c = _PIX2PIX.get_config(None)
  c.optimizer.update(schedule="constant", decay_start=0)
  c.data.update(resize_size=256)
  c.train.update(batch_size=16, steps=50_000, eval_every=5_000, checkpoint_every=5_000)
  return config_lib.apply_variants(c, arg, {"tiny": _PIX2PIX.VARIANTS["tiny"]})
