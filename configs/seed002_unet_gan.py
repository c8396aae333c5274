"""Seed 002 'Model 1': a basic U-Net + PatchGAN, generator pretrained with L1 (report 002_*.txt).

"Automatic Colourisation of Black and White Images" (Upadhyaya, Golechha, Mahansaria, Vij,
Maheshwari): the generator is a basic U-Net predicting ab from L, the discriminator a PatchGAN
on (L, ab); training is two-stage: the generator is first trained with the L1 loss alone, then
generator and discriminator alternate with GAN + L1 losses, D's loss being the average of its real
and fake losses. Stated values used: up to 10,000 ImageNet images split 80/20 (8,000 train),
images resized to 256x256 with random horizontal flips, L and ab normalised to [-1, 1]
(`L/50 - 1`, ab/110), 20 epochs of generator pretraining and 50 epochs of GAN training.

Chosen here (the report is silent): pix2pix's values for the rest (Isola et al. 2017; this config
starts from `configs/pix2pix.py`): unet_256 (ngf 64, 8 levels, dropout), 70x70 PatchGAN, vanilla GAN
loss, λ=100, Adam lr 2e-4 β=(0.5, 0.999) for G and D, a constant learning rate; batch 16, so an
epoch is 8,000 / 16 = 500 steps: 10,000 pretraining steps then 25,000 GAN steps (the report's '50
epochs, with the generator pre-trained for 20' is read as 20 + 50).

Variants: `tiny` (tests: 32 px, ngf/ndf 4, 2 pretraining + 2 GAN steps), `bf16`.

  colorjax train --config seed002_unet_gan --workdir /tmp/seed002 --config.data.train=/path
"""
from colorjax import config as config_lib

_PIX2PIX = config_lib.recipe_module("pix2pix")
STEPS_PER_EPOCH = 8_000 // 16


def tiny(c):
  """The tiny variant shared with seed002_attention_semantic."""
  config_lib.COMMON_VARIANTS["tiny"](c)
  c.model.num_downs = 5
  c.model.semantic_width = 1 / 16
  c.data.eval_size = 32
  c.train.pretrain_steps = 2


def get_config(arg: str | None = None):
  c = _PIX2PIX.get_config(None)
  c.optimizer.update(schedule="constant", decay_start=0)
  c.data.resize_size = 256
  c.train.update(batch_size=16, pretrain_steps=20 * STEPS_PER_EPOCH,
                 steps=70 * STEPS_PER_EPOCH, eval_every=5 * STEPS_PER_EPOCH,
                 checkpoint_every=5 * STEPS_PER_EPOCH)
  return config_lib.apply_variants(c, arg, {"tiny": tiny})
