"""Seed 001 model 2: a decoder on a frozen VGG16's feature maps (report 001_*.txt, section 4.2).

"Image Colorization Using Different Deep Learning Techniques" (Aggarwal, Gautam, Gunwant, Bhatt).
Stated values used: the pretrained VGG16's layers "up to the 19th layer" as a frozen feature
extractor on the gray image shown as RGB, a decoder of convolutions with upsampling and a tanh
output, MSE, Adam, 1000 epochs, batch 16; ~3,600 images with an 80/10/10 split.

The 19 first layers of Keras' `VGG16()` (input, 13 convolutions, 5 max-pools) end at block5_pool:
the decoder works on that map, pool5 (512 channels at 1/32 of the input; `model.name=
'feature_decoder'`, colorjax/models/fusion.py), not on a pooled vector. Pass the backbone weights:
--config.model.semantic_weights=/path/vgg16.pth (a torchvision `vgg16` state_dict); without it
the backbone is random and its features mean nothing.

Chosen here (the report is silent or ambiguous): 224x224 inputs (what Keras' VGG16 with its
classifier accepts, "reshaped to match the input shape"); the decoder is 3x3 conv + ReLU layers
256, 128, 64, 32, 16 with a x2 bilinear upsampling after each but the first, then a 3x3 conv to 2
channels with tanh and a bilinear resize to the input size (7 -> 224 px); it predicts ab (/110),
joined with the input's L, since the gray input already gives L; Adam lr 1e-3 β=(0.9, 0.999)
(Keras' defaults); 1000 epochs of 2,880 images at batch 16 = 180,000 steps; L normalised to
[-1, 1]; augmentations as model 1 (rotation ±10°, blur sigma up to 1 px, a 32-px cutout).

Variants: `tiny` (tests: 32 px, VGG16 width 1/16, decoder ngf 4, 4 steps), `bf16`.

  colorjax train --config seed001_vgg16 --workdir /tmp/seed001m2 \\
    --config.data.train=/path --config.model.semantic_weights=vgg16.pth
"""
from colorjax import config as config_lib

_MODEL1 = config_lib.recipe_module("seed001_scratch")


def _tiny(c):
  _MODEL1.tiny(c)
  c.model.semantic_width = 1 / 16


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model.update(name="feature_decoder", output="ab", convention="pix2pix", ngf=64,
                 use_dropout=False, semantic_backbone="vgg16", semantic_trainable=False)
  c.loss.kind = "l2"
  c.optimizer.update(name="adam", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0,
                     schedule="constant")
  c.data.update(crop_size=224, resize_size=224, eval_size=224, flip=True, vflip=True,
                rotate_degrees=10.0, blur_sigma=1.0, cutout=32, eval_fraction=0.1)
  steps_per_epoch = _MODEL1.STEPS_PER_EPOCH
  c.train.update(batch_size=16, steps=1000 * steps_per_epoch, eval_every=50 * steps_per_epoch,
                 checkpoint_every=50 * steps_per_epoch)
  return config_lib.apply_variants(c, arg, {"tiny": _tiny})
