"""Losses of the colorization recipes: pure functions of arrays, averaged over the global batch.

* `soft_ce` — ECCV16: cross-entropy between predicted 313-way distributions and soft-encoded
  ground truth, each pixel weighted by the class-rebalancing weight of its nearest bin, gray
  images weighted 0 (Zhang et al. 2016, eq. 2-4).
* regression — L1, L2 and p·L1 + (1-p)·MSE (seed 003) on normalised ab (or RGB).
* GAN — vanilla (BCE), LSGAN and hinge, for the discriminator and the generator.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from colorjax import color

GRAY_THRESHOLD = 5.0  # an image whose |a| and |b| never exceed this (Lab units) has no color


def nongray_mask(ab_BHW2: jax.Array) -> jax.Array:
  """(B,) 1.0 for images with any pixel's |a| or |b| above GRAY_THRESHOLD, else 0.0."""
  return jnp.any(jnp.abs(ab_BHW2) > GRAY_THRESHOLD, axis=(1, 2, 3)).astype(jnp.float32)


def subsample_to(ab_BHW2: jax.Array, height: int, width: int) -> jax.Array:
  """Strided subsampling to the logits' resolution, as the release's training net does."""
  sy, sx = ab_BHW2.shape[1] // height, ab_BHW2.shape[2] // width
  return ab_BHW2[:, ::sy, ::sx][:, :height, :width]


def soft_ce(logits_BhwQ: jax.Array, ab_true_BHW2: jax.Array, class_weights_Q: jax.Array,
            *, k: int = 5, sigma: float = 5.0) -> jax.Array:
  """Rebalanced soft-encoded multinomial cross-entropy (scalar).

  The ground-truth ab (full resolution, Lab units) is subsampled to the logits' resolution,
  soft-encoded on its k nearest bins, and each pixel's loss is scaled by the rebalancing weight of
  its nearest bin; gray images contribute 0. The sum is divided by the number of pixels of the
  whole batch, so the value does not depend on how the batch is split across devices.
  """
  _, h, w, _ = logits_BhwQ.shape
  ab = subsample_to(ab_true_BHW2, h, w)
  target = color.soft_encode(ab, k=k, sigma=sigma)
  pixel_weight = class_weights_Q[color.nearest_bin(ab)]
  pixel_weight = pixel_weight * nongray_mask(ab_true_BHW2)[:, None, None]
  ce = optax.softmax_cross_entropy(logits_BhwQ.astype(jnp.float32), target)
  return jnp.sum(ce * pixel_weight) / ce.size


def regression(pred: jax.Array, target: jax.Array, kind: str, p: float = 0.5) -> jax.Array:
  """'l1' | 'l2' (MSE) | 'l1_mse' (p·L1 + (1-p)·MSE) between arrays of equal shape."""
  diff = pred.astype(jnp.float32) - target.astype(jnp.float32)
  l1 = jnp.mean(jnp.abs(diff))
  mse = jnp.mean(diff**2)
  if kind == "l1":
    return l1
  if kind == "l2":
    return mse
  if kind == "l1_mse":
    return p * l1 + (1.0 - p) * mse
  raise ValueError(f"unknown regression loss {kind!r}")


def discriminator_loss_terms(real_logits: jax.Array, fake_logits: jax.Array, kind: str
                             ) -> tuple[jax.Array, jax.Array]:
  """D's loss on real patches and on generated patches, each a mean over its patches.

  vanilla: BCE(real, 1) and BCE(fake, 0); lsgan: (real - 1)^2 and fake^2; hinge: relu(1 - real)
  and relu(1 + fake). `discriminator_loss` is half their sum.
  """
  real_logits = real_logits.astype(jnp.float32)
  fake_logits = fake_logits.astype(jnp.float32)
  if kind == "vanilla":
    return (optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)).mean(),
            optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)).mean())
  if kind == "lsgan":
    return jnp.mean((real_logits - 1.0) ** 2), jnp.mean(fake_logits**2)
  if kind == "hinge":
    return jnp.mean(jax.nn.relu(1.0 - real_logits)), jnp.mean(jax.nn.relu(1.0 + fake_logits))
  raise ValueError(f"unknown GAN loss {kind!r}")


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str) -> jax.Array:
  """D's loss on real and generated patches, halved as in pix2pix: 0.5 * (real + fake) terms."""
  real, fake = discriminator_loss_terms(real_logits, fake_logits, kind)
  return 0.5 * (real + fake)


def generator_gan_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
  """G's adversarial loss: make D call the generated patches real."""
  fake_logits = fake_logits.astype(jnp.float32)
  if kind == "vanilla":
    return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean()
  if kind == "lsgan":
    return jnp.mean((fake_logits - 1.0) ** 2)
  if kind == "hinge":
    return -jnp.mean(fake_logits)
  raise ValueError(f"unknown GAN loss {kind!r}")
