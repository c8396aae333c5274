"""pix2pix: "Image-to-Image Translation with Conditional Adversarial Networks", Isola et al. 2017.

The conditional GAN that seeds 002 and 004 build on (and the reference the SPEC cites): a U-Net
generator (`unet_256`: ngf 64, 8 levels, dropout 0.5 in three inner decoder blocks, tanh ab/110)
and a 70x70 PatchGAN discriminator on concat(L, ab); vanilla GAN loss + λ·L1 with λ=100, D loss
halved, Adam lr 2e-4 β=(0.5, 0.999) for G and D, learning rate constant for the first half of
training then decayed linearly to 0, 'random jitter' (resize to 286, random 256 crop) and flips,
L normalised to [-1, 1] (`L/50 - 1`), ab/110.

Chosen here (not a published pix2pix value): the batch size (the paper used 1-10 depending on
the dataset; 8 splits evenly over 8 devices) and the length, 200k steps with the decay from 100k
(the release's 100 + 100 epochs, expressed in steps for a dataset of unknown size).

Variants: `tiny` (tests: 32-px crops, ngf/ndf 4, 4 steps), `quickstart`, `bf16`.

  colorjax train --config pix2pix --workdir /tmp/pix2pix --config.data.train=/path/to/photos
"""
from colorjax import config as config_lib


def _tiny(c):
  config_lib.COMMON_VARIANTS["tiny"](c)
  c.model.num_downs = 5       # 32 px -> a 1x1 bottleneck, as unet_256 at 256 px
  c.data.eval_size = 32
  c.optimizer.decay_start = 2


def _quickstart(c):
  config_lib.COMMON_VARIANTS["quickstart"](c)
  c.model.num_downs = 6
  c.data.eval_size = 64
  c.optimizer.decay_start = 150


VARIANTS = {"tiny": _tiny, "quickstart": _quickstart}  # shared by recipes built on this one


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model.update(name="unet", output="ab", convention="pix2pix", ngf=64, num_downs=8,
                 use_dropout=True, skip_connections=True)
  c.disc.update(enabled=True, n_layers=3, ndf=64)
  c.loss.update(kind="l1", gan="vanilla", gan_weight=1.0, l1_weight=100.0)
  c.optimizer.update(lr=2e-4, b1=0.5, b2=0.999, weight_decay=0.0, schedule="linear_decay",
                     decay_start=100_000, disc_lr=2e-4, disc_b1=0.5, disc_b2=0.999)
  c.data.update(crop_size=256, resize_size=286, eval_size=256)
  c.train.update(batch_size=8, steps=200_000, eval_every=10_000, checkpoint_every=10_000)
  return config_lib.apply_variants(c, arg, VARIANTS)
