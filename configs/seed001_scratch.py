"""Seed 001 model 1: the encoder-decoder trained from scratch (report 001_*.txt, section 4.1).

"Image Colorization Using Different Deep Learning Techniques" (Aggarwal, Gautam, Gunwant, Bhatt).
Stated values used: 512x512 gray in, RGB out; an encoder of convolutions that halve the size
down to a 32x32x1024 bottleneck, a decoder of transposed convolutions back to 512x512x3;
BatchNorm after each encoder convolution and Dropout(0.5) after each BatchNorm
(`model.encoder_dropout=0.5`); weight decay 1e-3; Adam lr 1e-3; MSE; 300 epochs; ~3,600 images,
80/10/10 split; augmentations rotation, flips, Gaussian blur, cutout.

The network is this package's U-Net without skip connections (`skip_connections=False`), 4
levels at ngf 128 (channels 128-256-512-1024: 512 px -> the 32x32x1024 bottleneck), 4x4 stride-2
convolutions and transposed convolutions, tanh RGB output (mapped to [0, 1]).

Chosen here (the report is silent or ambiguous): the encoder's outermost and innermost
convolutions have no BatchNorm (the U-Net's rule), so dropout follows the BatchNorms of levels
1 and 2; no dropout in the decoder; "weight decay 0.001 per epoch" is read as a coupled L2 decay
of 1e-3 per step (Keras' kernel regulariser); batch 16 (300 epochs of 2,880 images = 54,000
steps); Adam β=(0.9, 0.999) (Keras' defaults); L normalised to [-1, 1]; augmentation sizes
(rotation ±10°, blur sigma up to 1 px, a 64-px cutout).

Variants: `tiny` (tests: 32 px, ngf 4, 4 steps), `bf16`.

  colorjax train --config seed001_scratch --workdir /tmp/seed001m1 --config.data.train=/path
"""
from colorjax import config as config_lib

IMAGES = 3_600
STEPS_PER_EPOCH = int(IMAGES * 0.8) // 16


def tiny(c):
  """The tiny variant shared by the report 001 recipes (32 px)."""
  config_lib.COMMON_VARIANTS["tiny"](c)
  c.data.update(eval_size=32, cutout=8)


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model.update(name="unet", output="rgb", convention="pix2pix", ngf=128, num_downs=4,
                 skip_connections=False, use_dropout=False, encoder_dropout=0.5)
  c.loss.kind = "l2"
  c.optimizer.update(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=1e-3,
                     schedule="constant")
  c.data.update(crop_size=512, resize_size=512, eval_size=512, flip=True, vflip=True,
                rotate_degrees=10.0, blur_sigma=1.0, cutout=64, eval_fraction=0.1)
  c.train.update(batch_size=16, steps=300 * STEPS_PER_EPOCH, eval_every=50 * STEPS_PER_EPOCH,
                 checkpoint_every=50 * STEPS_PER_EPOCH)
  return config_lib.apply_variants(c, arg, {"tiny": tiny})
