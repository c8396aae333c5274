"""Seed 000 'enhanced GAN': the ECCV16 network fine-tuned as a GAN generator (report 000_*.txt).

"Colorization of grayscale images using Deep Neural Networks" (DATS 6303, Group 1) starts from the
pretrained ECCV16 model of Zhang et al. and fine-tunes it in two stages:
  1. 3 epochs of MSE on the predicted ab ("Finetune ECCV16 with MSE loss (3 epochs)");
  2. 50 epochs of GAN: G loss = GAN + λ·L1 + perceptual (VGG19 features), λ=10,
     D loss = 0.5·(loss_real + loss_fake), the conditional GAN objective of pix2pix (vanilla BCE).
Stated values used here: G lr 2e-4, D lr 1e-4, Adam β=(0.5, 0.999) for both, batch 16, λ=10,
256x256 images, ECCV16 normalisation ((L-50)/100, ab/110), ImageNet-50 (~50,000 images).

The generator is `model.name='eccv16'` with `model.output='bins'`: its 313 logits are decoded to
ab by the annealed mean (T=0.38), upsampled to full resolution, and that ab is what D sees and
what the MSE / L1 / perceptual terms compare. D is the 70x70 PatchGAN on concat(L, ab).
Pass the official weights to fine-tune them, as the report does:
  --config.model.init_from=/path/colorization_release_v2-9b330a0b.pth
(without it G starts from random weights, which is not this recipe). The perceptual term needs
torchvision VGG19 weights: --config.loss.perceptual_weights=/path/vgg19.pth (training stops with
an error naming that key when it is missing).

Where the report is silent, chosen here: steps from the stated epochs at ~50,000 images / 16 =
3,125 steps per epoch (stage 1: 9,375 steps; total 53 epochs = 165,625 steps); a constant learning
rate (no decay is mentioned); no weight decay; the perceptual term's weight 1 (the report's sum has
no coefficient) on the mean L1 distance of relu1_2 ... relu5_4 (see colorjax/perceptual.py);
images resized to 256 with random flips, no crop jitter.

Variants: `tiny` (tests: width 1/16, 32 px, random VGG19 stage 1, 2 + 2 steps), `bf16`.

  colorjax train --config seed000_eccv16_gan --workdir /tmp/seed000 \\
    --config.data.train=/path/to/imagenet50/train --config.model.init_from=release.pth \\
    --config.loss.perceptual_weights=vgg19.pth
"""
from colorjax import config as config_lib

STEPS_PER_EPOCH = 50_000 // 16


def _tiny(c):
  config_lib.COMMON_VARIANTS["tiny"](c)
  c.data.eval_size = 32
  c.train.pretrain_steps = 2
  c.loss.perceptual_weights = "random"
  c.loss.perceptual_layers = ("relu1_2",)


def get_config(arg: str | None = None):
  c = config_lib.base_config()
  c.model.update(name="eccv16", output="bins", convention="eccv16", temperature=0.38)
  c.disc.update(enabled=True, n_layers=3, ndf=64)
  c.loss.update(kind="l2", gan="vanilla", gan_weight=1.0, l1_weight=10.0, perceptual_weight=1.0)
  c.optimizer.update(lr=2e-4, b1=0.5, b2=0.999, weight_decay=0.0, schedule="constant",
                     disc_lr=1e-4, disc_b1=0.5, disc_b2=0.999)
  c.data.update(crop_size=256, resize_size=256, eval_size=256)
  c.train.update(batch_size=16, pretrain_steps=3 * STEPS_PER_EPOCH, steps=53 * STEPS_PER_EPOCH,
                 eval_every=STEPS_PER_EPOCH, checkpoint_every=STEPS_PER_EPOCH)
  return config_lib.apply_variants(c, arg, {"tiny": _tiny})
