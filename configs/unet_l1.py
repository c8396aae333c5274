"""U-Net + L1 only: the 'L1' row of the pix2pix ablation (Isola et al. 2017, Table 1 / Fig. 4).

The pix2pix recipe (`configs/pix2pix.py`) without the discriminator: the `unet_256` generator
regresses ab/110 with the L1 loss alone, Adam lr 2e-4 β=(0.5, 0.999), constant then linear decay,
resize 286 + random 256 crop + flips. It is the regression baseline of every GAN recipe here and
shows the desaturated 'average color' that the GAN term is meant to fix (seed 003 discusses the
same effect for L1/MSE).

Variants: `tiny` (tests), `quickstart`, `bf16`.

  colorjax train --config unet_l1 --workdir /tmp/unet_l1 --config.data.train=/path/to/photos
"""
from colorjax import config as config_lib

_PIX2PIX = config_lib.recipe_module("pix2pix")


def get_config(arg: str | None = None):
  c = _PIX2PIX.get_config(None)
  c.disc.enabled = False
  return config_lib.apply_variants(c, arg, _PIX2PIX.VARIANTS)
