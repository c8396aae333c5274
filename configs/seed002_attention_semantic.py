"""Seed 002 'Model 2': U-Net with multiscale inputs, self-attention and ResNet-18 semantic
conditioning of both G and D (report 002_*.txt).

The enhancements of "Automatic Colourisation of Black and White Images" over its Model 1
(`configs/seed002_unet_gan.py`, whose training recipe this one keeps: L1 pretraining of G, then
GAN + L1, 256 px, flips, [-1, 1] normalisation, 20 + 50 epochs of 8,000 images):
  * multiscale inputs: L at the original, half and double resolution (`model.multiscale_inputs`;
    how they enter the U-Net is described in colorjax/models/unet.py);
  * a self-attention layer for long-range consistency (`model.attention`);
  * semantic features of a pretrained ResNet-18 fed to the generator and to the discriminator
    (a conditional PatchGAN), `model.semantic_backbone='resnet18'`, `disc.semantic=True`; the
    report uses the pretrained model as a fixed feature extractor, so the backbone is frozen
    (`model.semantic_trainable=False`). In G the features are "concatenated with the grayscale
    input", as the report writes: `model.semantic_fusion='input'` upsamples ResNet-18's layer4
    map (512 channels at 1/32) bilinearly to the image size and concatenates it with L at the
    U-Net's input. `--config.model.semantic_fusion=bottleneck` fuses the pooled 512-d vector at
    the bottleneck instead (a 1x1 conv), colorjax's earlier reading.
Pass the backbone weights: --config.model.semantic_weights=/path/resnet18.pth (a torchvision
`resnet18` state_dict); without it the backbone is random and the conditioning means nothing.

Chosen here (the report is silent): one SAGAN-style attention block on the decoder output of
level 3 (32x32 at 256 px); G and D each run their own copy of the frozen backbone on the gray
input at its own size; the layer4 map is the one G sees (the backbone's last, most semantic);
D gets the pooled vector, projected before its last normalised conv.

Variants: `tiny` (tests: 32 px, ngf/ndf 4, ResNet-18 width 1/16, 2 + 2 steps), `bf16`.

  colorjax train --config seed002_attention_semantic --workdir /tmp/seed002b \\
    --config.data.train=/path --config.model.semantic_weights=resnet18.pth
"""
from colorjax import config as config_lib

_MODEL1 = config_lib.recipe_module("seed002_unet_gan")


def get_config(arg: str | None = None):
  c = _MODEL1.get_config(None)
  c.model.update(multiscale_inputs=True, attention=(3,), semantic_backbone="resnet18",
                 semantic_trainable=False, semantic_fusion="input")
  c.disc.semantic = True
  return config_lib.apply_variants(c, arg, {"tiny": _MODEL1.tiny})
