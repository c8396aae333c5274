"""Seed 003 'U-Net LAB': a 4-level U-Net regressing ab with 0.5·MSE + 0.5·L1 (report 003_*.txt).

"Automatic Image Colorization using CNNs" (Dalban & Lakbir) compares a plain CNN, a U-Net
predicting RGB and a U-Net predicting Lab ab (`seed003_cnn`, `seed003_unet_rgb`, this one).
Stated values used: L in, ab out, 512x512 images, a 4-level U-Net encoder-decoder of ~20.5M
parameters, Adam lr 1e-4, batch 16, 15 epochs, loss 0.5·MSE + 0.5·L1 (`loss.kind='l1_mse'`,
p=0.5), 5,800 training / 1,000 test images.

The network is this package's U-Net with 4 levels (512 px -> a 32x32 bottleneck) and ngf=116,
20,250,122 parameters (the report's U-Net is a different, double-3x3-conv design of ~20.5M).

Chosen here (the report is silent): Adam β=(0.9, 0.999) (the PyTorch default); 15 epochs at
5,800 / 16 = 362 steps per epoch = 5,430 steps; L normalised to [-1, 1] and ab/110 (the report
scales L to [0, 1], a convention this package does not have); no flips (none are mentioned);
the eval split 1,000 / 6,800 of the images.

Variants: `tiny` (tests: 32 px, ngf 4, 4 steps), `bf16`.

  colorjax train --config seed003_unet_lab --workdir /tmp/seed003lab --config.data.train=/path
"""
from colorjax import config as config_lib

STEPS_PER_EPOCH = 5_800 // 16


def _tiny(c):
  config_lib.COMMON_VARIANTS["tiny"](c)
  c.data.eval_size = 32


VARIANTS = {"tiny": _tiny}  # shared by the seed 003 recipes built on this one


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model.update(name="unet", output="ab", convention="pix2pix", ngf=116, num_downs=4,
                 skip_connections=True, use_dropout=False)
  c.loss.update(kind="l1_mse", l1_mse_p=0.5)
  c.optimizer.update(lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0, schedule="constant")
  c.data.update(crop_size=512, resize_size=512, eval_size=512, flip=False,
                eval_fraction=1_000 / 6_800)
  c.train.update(batch_size=16, steps=15 * STEPS_PER_EPOCH, eval_every=STEPS_PER_EPOCH,
                 checkpoint_every=STEPS_PER_EPOCH)
  return config_lib.apply_variants(c, arg, VARIANTS)
