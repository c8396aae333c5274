"""Seed 003 'U-Net RGB': a 4-level U-Net from gray to RGB with 0.7·MSE + 0.3·L1 (report 003_*.txt).

"Automatic Image Colorization using CNNs" (Dalban & Lakbir), the RGB U-Net: `seed003_unet_lab` with
the values below changed. Stated values used: 96x96 images (the 512-px photos rescaled), gray in,
RGB out, a 4-level U-Net of ~4.5M parameters, Adam lr 1e-4, batch 512, 20 epochs, loss 0.7·MSE +
0.3·L1 (`loss.kind='l1_mse'`, p=0.3), 5,800 training / 1,000 test images.

The network is this package's U-Net with 4 levels (96 px -> a 6x6 bottleneck), ngf=55 (4,557,193
parameters) and the RGB head (`model.output='rgb'`: tanh RGB, mapped to [0, 1] by (x+1)/2; the
loss compares it with the true RGB in [-1, 1]). Its input is the L channel, which carries the
same information as the report's gray image.

Chosen here (the report is silent): Adam β=(0.9, 0.999); 20 epochs at 5,800 / 512 = 11 steps
per epoch = 220 steps; L normalised to [-1, 1]; no flips; the eval split 1,000 / 6,800.

Variants: `tiny` (tests: 32 px, ngf 4, batch 8, 4 steps), `bf16`.

  colorjax train --config seed003_unet_rgb --workdir /tmp/seed003rgb --config.data.train=/path
"""
from colorjax import config as config_lib

_UNET_LAB = config_lib.recipe_module("seed003_unet_lab")
VARIANTS = _UNET_LAB.VARIANTS

STEPS_PER_EPOCH = 5_800 // 512


def get_config(arg: str | None = None):
  c = _UNET_LAB.get_config(None)
  c.model.update(output="rgb", ngf=55)
  c.loss.l1_mse_p = 0.3
  c.data.update(crop_size=96, resize_size=96, eval_size=96)
  c.train.update(batch_size=512, steps=20 * STEPS_PER_EPOCH, log_every=1,
                 eval_every=STEPS_PER_EPOCH, checkpoint_every=5 * STEPS_PER_EPOCH)
  return config_lib.apply_variants(c, arg, VARIANTS)
