"""Seed 003 'CNN baseline': a plain encoder-decoder from gray to RGB (report 003_*.txt).

"Automatic Image Colorization using CNNs" (Dalban & Lakbir), the 'naive approach' baseline that
shows the averaging trap of pixel-wise L2 regression. Stated values used: 96x96 gray in, RGB
out, an encoder of four stride-halving stages 96 -> 48 -> 24 -> 12 -> 6 with channels 64, 128,
256, 512, a mirrored transposed-conv decoder, BatchNorm + ReLU, ~4.3M parameters, pixel-wise
L2 (MSE) loss; 5,800 training / 1,000 test images.

The network is this package's U-Net without skip connections (`skip_connections=False`), 4
levels at ngf=64 (channels 64-128-256-512, 96 px -> 6x6), RGB head: 5,510,787 parameters, since
its 4x4 stride-2 convolutions replace the report's 3x3 conv + max-pool stages, and its tanh output
(mapped to [0, 1]) replaces the report's sigmoid.

Chosen here (the report is silent on this model's training): the U-Net RGB model's settings,
Adam lr 1e-4 β=(0.9, 0.999), batch 512, 20 epochs (220 steps); L normalised to [-1, 1]; no flips.

Variants: `tiny` (tests: 32 px, ngf 4, 4 steps), `bf16`.

  colorjax train --config seed003_cnn --workdir /tmp/seed003cnn --config.data.train=/path
"""
from colorjax import config as config_lib

_UNET_RGB = config_lib.recipe_module("seed003_unet_rgb")


def get_config(arg: str | None = None):
  c = _UNET_RGB.get_config(None)
  c.model.update(ngf=64, skip_connections=False)
  c.loss.kind = "l2"
  return config_lib.apply_variants(c, arg, _UNET_RGB.VARIANTS)
