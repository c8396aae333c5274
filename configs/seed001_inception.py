"""Seed 001 model 3: an encoder-decoder fused with a frozen InceptionV3 embedding (report 001_*.txt,
section 4.3).

"Image Colorization Using Different Deep Learning Techniques" (Aggarwal, Gautam, Gunwant, Bhatt).
Stated values used: 256x256 gray in, ab out (tanh); an encoder of 3x3 convolutions + ReLU from 64
filters with strided convolutions; the embedding of the gray image, resized, through the
pretrained InceptionV3, repeated over the encoder's grid, concatenated and fused by a 1x1 conv
with 256 filters + ReLU; a decoder of convolutions and bilinear upsampling ending in a 2-filter
tanh conv, upsampled to the image size; RMSProp; MSE; batch 10; 500 epochs of 10 steps.

The network is `model.name='fusion'` (colorjax/models/fusion.py). Pass the backbone weights:
--config.model.semantic_weights=/path/inception_v3.pth (a torchvision `inception_v3` state_dict:
torchvision's pooling, not the FID network's); without it the backbone is random and the
embedding means nothing.

Chosen here (the report is silent or ambiguous): the encoder and decoder widths of model 4's
table (encoder 64-128-128-256-256-512-512-256 with stride 2 at the 1st, 3rd and 5th
convolutions: 256 px -> 32x32; decoder 128-64-32-16-2, upsampling x2 after the 128 and the 64,
then to 256 px); the embedding is InceptionV3's 2048-d average pool of the gray image resized
to 299x299 (bilinear), the classifier's input (not its 1000 class scores); RMSProp with Keras'
defaults (lr 1e-3, rho 0.9, eps 1e-7: `optimizer.name='rmsprop'`); 5,000 steps; L normalised
to [-1, 1]; augmentations as model 1 (rotation ±10°, blur sigma up to 1 px, a 32-px cutout).

Variants: `tiny` (tests: 32 px, fusion ngf 4, InceptionV3 width 1/16 on 75x75, 4 steps), `bf16`
(the encoder-decoder; InceptionV3 computes in float32).

  colorjax train --config seed001_inception --workdir /tmp/seed001m3 \\
    --config.data.train=/path --config.model.semantic_weights=inception_v3.pth
"""
from colorjax import config as config_lib

_MODEL1 = config_lib.recipe_module("seed001_scratch")


def fusion_config(backbone: str, input_size: int):
  """The fusion recipe of report 001's models 3 and 4 with `backbone` seeing `input_size` px."""
  c = config_lib.base_config()
  c.model.update(name="fusion", output="ab", convention="pix2pix", ngf=64, use_dropout=False,
                 semantic_backbone=backbone, semantic_trainable=False,
                 semantic_input_size=input_size)
  c.loss.kind = "l2"
  c.optimizer.update(name="rmsprop", lr=1e-3, rms_decay=0.9, rms_eps=1e-7, weight_decay=0.0,
                     schedule="constant")
  c.data.update(crop_size=256, resize_size=256, eval_size=256, flip=True, vflip=True,
                rotate_degrees=10.0, blur_sigma=1.0, cutout=32, eval_fraction=0.1)
  c.train.update(batch_size=10, steps=500 * 10, eval_every=500, checkpoint_every=500)
  return c


def _tiny(c):
  _MODEL1.tiny(c)
  c.model.semantic_width = 1 / 16
  c.model.semantic_input_size = 75  # the smallest input InceptionV3's valid convolutions take


def get_config(arg: str | None = None):
  return config_lib.apply_variants(fusion_config("inception_v3", 299), arg, {"tiny": _tiny})
