"""Golden first-step metrics of colorjax.train per recipe family: the loss and gradient norms of
the first step at a fixed seed, on fixed bundled photos, on one device.

Shape and finiteness tests cannot see a silent change of numerics (a loss term reweighted, a
normalisation changed, an initialiser swapped); these can. When one fails after a deliberate
change of the numerics, check that the new values are right (the other tests, a short training
run), then replace the recipe's entry in GOLDEN with the values the failure prints, and say why
in the commit message. Tolerances allow for the CPU's float rounding, not for a changed model.
"""
import jax
import numpy as np
import pytest
from PIL import Image

from colorjax import config as config_lib, sharding, train

GOLDEN = {
    "eccv16:tiny": {"train/grad_norm": 1.7494227886199951, "train/loss": 5.755856037139893},
    "pix2pix:tiny": {"train/d_grad_norm": 1.3641608953475952, "train/d_loss": 0.7048078775405884,
                     "train/grad_norm": 51.826412200927734, "train/loss": 19.84768295288086},
    # A semantic variant: U-Net with attention, multiscale L and ResNet-18 features (random).
    "seed002_attention_semantic:tiny": {"train/grad_norm": 0.5477110147476196,
                                        "train/loss": 0.20115353167057037},
}
RTOL = 2e-4


def _first_step_metrics(spec: str, photos_dir) -> dict[str, float]:
  config = config_lib.load_config(spec)
  size = config.data.crop_size
  rgb = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC))
                  for p in sorted(photos_dir.glob("*.jpg"))[:config.train.batch_size]])
  mesh = sharding.create_mesh(1)
  trainer = train.build(config, mesh)
  step = trainer.step(0)
  _, metrics = step(trainer.state, sharding.shard_batch({"rgb": rgb}, mesh))
  return {k: float(v) for k, v in jax.device_get(metrics).items()
          if k in ("train/loss", "train/grad_norm", "train/d_loss", "train/d_grad_norm")}


@pytest.mark.parametrize("spec", sorted(GOLDEN))
def test_first_step_matches_golden(spec, photos_dir):
  got = _first_step_metrics(spec, photos_dir)
  want = GOLDEN[spec]
  assert set(got) == set(want), f"{spec}: metric names changed: {sorted(got)}"
  for key, value in want.items():
    assert got[key] == pytest.approx(value, rel=RTOL), (
        f"{spec} {key}: {got[key]!r} vs golden {value!r}. If the numerics changed on purpose, "
        f"replace GOLDEN[{spec!r}] with {got!r} (see the module docstring).")
