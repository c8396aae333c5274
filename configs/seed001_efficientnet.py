"""Seed 001 model 4: an encoder-decoder fused with a frozen EfficientNet-B0 embedding (report
001_*.txt, section 4.4).

"Image Colorization Using Different Deep Learning Techniques" (Aggarwal, Gautam, Gunwant, Bhatt).
Stated values used: target size 256x256; the pretrained EfficientNet-B0 as a feature extractor
of the gray image; encoder filters 64, 128, 128, 256, 256, 512, 512, 256; the embedding
reshaped, concatenated with the encoder's features and fused by a convolution of 256 filters;
decoder filters 128, 64, 32, 16, 2 with upsampling, ab out; MSE; RMSprop; batch 10; 100 images;
500 epochs.

The network is `model.name='fusion'` (colorjax/models/fusion.py), the same as model 3's
(`configs/seed001_inception.py`, whose choices this recipe shares) with EfficientNet-B0
(colorjax/models/efficientnet.py). Pass the backbone weights:
--config.model.semantic_weights=/path/efficientnet_b0.pth (a torchvision `efficientnet_b0`
state_dict); without it the backbone is random and the embedding means nothing.

Chosen here (the report is silent or ambiguous): the embedding is EfficientNet-B0's 1280-d
average pool (the classifier's input) of the gray image resized to 224x224, its ImageNet size;
the fusion is a 1x1 conv + ReLU and the decoder upsamples as model 3's (the report draws both
alike); RMSProp with Keras' defaults (lr 1e-3, rho 0.9, eps 1e-7); 500 epochs of 100 images at
batch 10 = 5,000 steps.

Variants: `tiny` (tests: 32 px, fusion ngf 4, EfficientNet-B0 width 1/16 at 32 px, 4 steps),
`bf16`.

  colorjax train --config seed001_efficientnet --workdir /tmp/seed001m4 \\
    --config.data.train=/path --config.model.semantic_weights=efficientnet_b0.pth
"""
from colorjax import config as config_lib

_MODEL1 = config_lib.recipe_module("seed001_scratch")
_MODEL3 = config_lib.recipe_module("seed001_inception")


def _tiny(c):
  _MODEL1.tiny(c)
  c.model.update(semantic_width=1 / 16, semantic_input_size=32)


def get_config(arg: str | None = None):
  return config_lib.apply_variants(_MODEL3.fusion_config("efficientnet_b0", 224), arg,
                                   {"tiny": _tiny})
