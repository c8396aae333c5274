"""Tests of colorjax.losses against direct numpy computations and closed forms."""
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from colorjax import color, losses


def _reference_soft_ce(logits, ab, class_weights, k, sigma):
  b, h, w, _ = logits.shape
  ab_small = ab[:, ::ab.shape[1] // h, ::ab.shape[2] // w]
  total = 0.0
  for i in range(b):
    colored = np.abs(ab[i]).max() > 5.0
    for y in range(h):
      for x in range(w):
        d2 = ((color.AB_BINS - ab_small[i, y, x]) ** 2).sum(-1)
        nearest = np.argsort(d2)[:k]
        target = np.zeros(313)
        target[nearest] = np.exp(-d2[nearest] / (2 * sigma**2))
        target /= target.sum()
        ce = -(target * log_softmax(logits[i, y, x])).sum()
        total += colored * class_weights[np.argmin(d2)] * ce
  return total / (b * h * w)


def test_soft_ce_matches_direct_computation():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 2, 313)).astype(np.float32)
  ab = rng.uniform(-60, 60, size=(3, 8, 8, 2)).astype(np.float32)
  ab[2] = 1.0  # a gray image: weight 0
  class_weights = rng.uniform(0.5, 2.0, size=313).astype(np.float32)
  got = losses.soft_ce(jnp.asarray(logits), jnp.asarray(ab), jnp.asarray(class_weights), k=5,
                       sigma=5.0)
  want = _reference_soft_ce(logits, ab, class_weights, 5, 5.0)
  assert float(got) == pytest.approx(want, rel=1e-4)


def test_gray_images_contribute_nothing():
  logits = jnp.zeros((2, 2, 2, 313))
  ab = jnp.ones((2, 8, 8, 2)) * 3.0
  assert float(losses.soft_ce(logits, ab, jnp.ones(313))) == 0.0
  np.testing.assert_array_equal(losses.nongray_mask(jnp.stack([ab[0], ab[1] * 3])), [0.0, 1.0])


def test_regression_losses():
  pred, target = jnp.array([[0.0, 1.0], [2.0, -1.0]]), jnp.zeros((2, 2))
  assert float(losses.regression(pred, target, "l1")) == pytest.approx(1.0)
  assert float(losses.regression(pred, target, "l2")) == pytest.approx(1.5)
  assert float(losses.regression(pred, target, "l1_mse", p=0.25)) == pytest.approx(0.25 + 0.75 * 1.5)
  with pytest.raises(ValueError, match="l3"):
    losses.regression(pred, target, "l3")


@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "hinge"])
def test_gan_losses_closed_forms(kind):
  real, fake = jnp.full((2, 3, 3, 1), 2.0), jnp.full((2, 3, 3, 1), -1.0)
  softplus = lambda x: np.log1p(np.exp(x))
  want_d = {"vanilla": 0.5 * (softplus(-2.0) + softplus(-1.0)),
            "lsgan": 0.5 * ((2.0 - 1) ** 2 + 1.0),
            "hinge": 0.5 * (0.0 + 0.0)}[kind]
  want_g = {"vanilla": softplus(1.0), "lsgan": 4.0, "hinge": 1.0}[kind]
  assert float(losses.discriminator_loss(real, fake, kind)) == pytest.approx(want_d, rel=1e-5)
  assert float(losses.generator_gan_loss(fake, kind)) == pytest.approx(want_g, rel=1e-5)
