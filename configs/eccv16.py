"""ECCV16: "Colorful Image Colorization", Zhang, Isola & Efros, ECCV 2016.

The classification recipe: 313-way soft-encoded cross-entropy with class rebalancing (λ=0.5),
Adam(β1=0.9, β2=0.99), weight decay 1e-3, lr 3e-5 dropped to 1e-5 at 200k and 3e-6 at 375k
iterations, 450k iterations, batch 32 (reported hyper-parameters), random 176x176 crops + flips.

Variants: `tiny` (tests), `quickstart` (a few minutes on a CPU), `bf16` (mixed precision),
`imagenet` (expects `data.train` to be a prepared imagenet2012 directory).
"""
from colorjax import config as config_lib


def _imagenet(c):
  c.data.eval = c.data.train
  c.data.eval_images = 10_000  # the ColorNet evaluation uses 10k ImageNet validation images


def get_config(arg: str | None = None):
  c = config_lib.base_config()  # the base schema's values are this recipe's
  return config_lib.apply_variants(c, arg, {"imagenet": _imagenet})
