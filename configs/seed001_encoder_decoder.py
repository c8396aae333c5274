"""Seed 001: encoder-decoder colorization with a fused VGG16 embedding (report 001_*.txt).

"Image Colorization Using Different Deep Learning Techniques" (Aggarwal, Gautam, Gunwant, Bhatt)
compares four encoder-decoders. This recipe is the pretrained-backbone design of its section 4.3
(encoder, fusion, decoder): the encoder's bottleneck features are concatenated with a frozen
classifier's image embedding repeated over the grid and fused by a 1x1 conv to 256 channels, and a
tanh decoder predicts ab. The backbone here is VGG16 (the report's model 2 uses VGG16, frozen):
its embedding is the average of pool5 (512-d) of the gray image shown as RGB, at the input size.
Stated values used: frozen pretrained backbone, MSE loss, Adam, batch 16 and 1000 epochs
(VGG16 table), 256x256 inputs and fusion width 256 (model 3/4 tables), ~3,600 images with an
80/10/10 split, augmentations rotation + horizontal and vertical flips + Gaussian blur + cutout.

The network is the U-Net of this package without skip connections (`skip_connections=False`),
3 levels (64-128-256: 256 px -> a 32x32x256 bottleneck, where the fusion sits), 4x4 stride-2
convolutions instead of the report's 3x3 convolutions and bilinear upsampling.
Pass the backbone weights: --config.model.semantic_weights=/path/vgg16.pth (a torchvision
`vgg16` state_dict); without it the backbone is random and the conditioning means nothing.

Chosen here (the report is silent): lr 1e-3 (the Keras Adam default; model 1 states 1e-3),
β=(0.9, 0.999); 1000 epochs at 2,880 training images / 16 = 180 steps per epoch = 180,000 steps;
L normalised to [-1, 1]; augmentation sizes (rotation ±10°, blur sigma up to 1 px, a 32-px
cutout).
This recipe is colorjax's first reading of the report, a hybrid of its models: the report's four
models as written are `seed001_scratch` (model 1), `seed001_vgg16` (model 2: a decoder on VGG16's
feature maps), `seed001_inception` (model 3) and `seed001_efficientnet` (model 4), the last two
with the report's fusion network and RMSProp.

Variants: `tiny` (tests: 32 px, width 1/16 backbone, 4 steps), `bf16`.

  colorjax train --config seed001_encoder_decoder --workdir /tmp/seed001 \\
    --config.data.train=/path/to/photos --config.model.semantic_weights=vgg16.pth
"""
from colorjax import config as config_lib

STEPS_PER_EPOCH = 2_880 // 16


def _tiny(c):
  config_lib.COMMON_VARIANTS["tiny"](c)
  c.model.semantic_width = 1 / 16
  c.data.update(eval_size=32, cutout=8)


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model.update(name="unet", output="ab", convention="pix2pix", ngf=64, num_downs=3,
                 skip_connections=False, use_dropout=False, semantic_backbone="vgg16",
                 semantic_trainable=False)
  c.loss.kind = "l2"
  c.optimizer.update(lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0, schedule="constant")
  c.data.update(crop_size=256, resize_size=256, eval_size=256, flip=True, vflip=True,
                rotate_degrees=10.0, blur_sigma=1.0, cutout=32, eval_fraction=0.1)
  c.train.update(batch_size=16, steps=1000 * STEPS_PER_EPOCH, eval_every=50 * STEPS_PER_EPOCH,
                 checkpoint_every=50 * STEPS_PER_EPOCH)
  return config_lib.apply_variants(c, arg, {"tiny": _tiny})
