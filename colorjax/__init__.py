"""colorjax: automatic image colorization in JAX/Flax.

The notebook API:
  colorjax.Colorizer.from_checkpoint(path)        a trained or imported model
  colorjax.colorize(image, colorizer)             uint8 RGB at the input's size
  colorjax.train_and_evaluate(config, workdir)    training from a config
  colorjax.load_config('eccv16:quickstart')       a recipe from configs/
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "colorize": ("colorjax.colorization", "colorize"),
    "Colorizer": ("colorjax.inference", "Colorizer"),
    "train_and_evaluate": ("colorjax.train", "train_and_evaluate"),
    "load_config": ("colorjax.config", "load_config"),
}


def __getattr__(name):
  # Lazy, so that `import colorjax` stays cheap (no jax until something is used).
  if name in _LAZY:
    module, attr = _LAZY[name]
    return getattr(importlib.import_module(module), attr)
  raise AttributeError(f"module 'colorjax' has no attribute {name!r}")
