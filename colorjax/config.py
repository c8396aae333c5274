"""The config schema of colorjax, config-file loading, variants and validation.

Every recipe in `configs/` starts from `base_config()` and overrides what it changes, so every key
exists (with its type) in every config: an override of an unknown key or with a wrong type fails
before any work, naming the key. A config file is `configs/<recipe>.py` with `get_config(arg)`;
`arg` is a comma-separated list of variants (`configs/eccv16.py:tiny`), applied by
`apply_variants` in order.
"""
from __future__ import annotations

import importlib.util
import math
import pathlib
from typing import Callable, Mapping

import ml_collections

from colorjax import paths

REPO_CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

MODEL_NAMES = ("eccv16", "unet", "fusion", "feature_decoder")
OUTPUTS = ("bins", "ab", "rgb")
LOSS_KINDS = ("soft_ce", "l1", "l2", "l1_mse")
GAN_LOSSES = ("vanilla", "lsgan", "hinge")
SCHEDULES = ("constant", "step", "linear_decay")
OPTIMIZERS = ("adam", "rmsprop")
DTYPES = ("float32", "bfloat16")
BACKBONES = ("", "resnet18", "vgg16", "inception_v3", "efficientnet_b0")
SEMANTIC_FUSIONS = ("bottleneck", "input")
# The ReLU outputs of VGG19 (stages of 2, 2, 4, 4, 4 convs) a perceptual loss may tap.
VGG19_RELU_LAYERS = tuple(f"relu{stage}_{k}" for stage, convs in enumerate((2, 2, 4, 4, 4), start=1)
                          for k in range(1, convs + 1))


def base_config() -> ml_collections.ConfigDict:
  """Every key of every recipe, with the ECCV16 recipe's values (Zhang et al. 2016)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.distributed = "auto"  # 'auto' | 'on' | 'off': jax.distributed.initialize()

  c.model = ml_collections.ConfigDict(dict(
      name="eccv16",          # 'eccv16' | 'unet' | 'fusion' (report 001 models 3, 4: encoder,
                              # embedding fused by a 1x1 conv, bilinear decoder) |
                              # 'feature_decoder' (report 001 model 2: a decoder on the
                              # backbone's feature map); see colorjax/models/fusion.py
      output="bins",          # 'bins' (313 logits) | 'ab' (tanh ab/110) | 'rgb' (tanh RGB)
      convention="eccv16",    # input L normalisation: 'eccv16' (L-50)/100 | 'pix2pix' L/50-1
      width=1.0,              # ECCV16 channel multiplier
      ngf=64,                 # U-Net base width
      num_downs=0,            # U-Net depth; 0 = from the crop size (unet_256 = 8)
      skip_connections=True,  # False = plain encoder-decoder (seed 003 baseline)
      use_dropout=True,
      encoder_dropout=0.0,    # U-Net: dropout after every encoder BatchNorm (report 001 model 1)
      attention=(),           # U-Net decoder levels with a self-attention block (seed 002)
      multiscale_inputs=False,  # L at x1, x0.5, x2 (seed 002)
      semantic_backbone="",   # '' | 'resnet18' | 'vgg16' | 'inception_v3' | 'efficientnet_b0'
      semantic_fusion="bottleneck",  # U-Net: 'bottleneck' (pooled vector at the bottleneck) |
                              # 'input' (feature map upsampled, concatenated with the L input)
      semantic_input_size=0,  # side of the square the backbone sees (bilinear); 0 = the input's
      semantic_weights="",    # torchvision state_dict file for the backbone ('' = random init)
      semantic_trainable=False,  # False: the backbone is frozen (no gradient, no update)
      semantic_width=1.0,     # backbone channel multiplier; < 1 only for random tiny test models
      init_from="",           # start G from: official ECCV16 .pth, or a colorjax model dir or
                              # workdir with the same architecture ('' = random init)
      dtype="float32",        # compute dtype; 'bfloat16' = mixed precision with float32 params
      conv_impl="auto",       # convolution lowering: 'auto' (fastest for the backend) | 'xla' | ...
      remat=False,            # rematerialise activations in the backward pass (large batches)
      temperature=0.38,       # annealed-mean temperature for 'bins' outputs
  ))
  c.disc = ml_collections.ConfigDict(dict(
      enabled=False, n_layers=3, ndf=64, semantic=False))

  c.data = ml_collections.ConfigDict(dict(
      train="bundled",   # 'bundled' | an image folder | a prepared tfds/ArrayRecord directory
      eval="",           # '' = a held-out split of `train`
      eval_fraction=0.2,
      crop_size=176,     # random crop for training (176 in the paper)
      resize_size=256,   # short side before the random crop; 0 = crop_size
      eval_size=256,     # eval protocol: resize short side + center crop
      eval_images=0,     # 0 = all
      min_chroma=3.0,    # mean Lab chroma below which a training image is dropped as gray
      num_threads=2,
      num_workers=0,     # grain worker processes (0 = in-process threads)
      flip=True,         # random horizontal flips
      vflip=False,       # random vertical flips (seed 001)
      rotate_degrees=0.0,  # seed 001 augmentations
      blur_sigma=0.0,
      cutout=0,
  ))

  c.loss = ml_collections.ConfigDict(dict(
      kind="soft_ce",       # 'soft_ce' | 'l1' | 'l2' | 'l1_mse'
      l1_mse_p=0.5,         # p in p*L1 + (1-p)*MSE (seed 003)
      soft_k=5,             # nearest bins of the soft encoding (paper 5, released code 10)
      soft_sigma=5.0,
      rebalance_lambda=0.5,
      prior_file="",        # .npy prior over the 313 bins; '' = computed from the train data
      gan="vanilla",        # 'vanilla' (BCE) | 'lsgan' | 'hinge'
      gan_weight=1.0,
      l1_weight=100.0,      # lambda of the pix2pix L1 term
      perceptual_weight=0.0,
      perceptual_weights="",  # torchvision VGG19 state_dict file; 'random' = random (tests only)
      perceptual_layers=("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"),  # VGG19 taps
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      name="adam",           # generator optimizer: 'adam' (b1, b2) | 'rmsprop' (rms_decay, rms_eps)
      lr=3e-5, b1=0.9, b2=0.99,
      rms_decay=0.9,         # 'rmsprop': decay of the mean square (Keras rho)
      rms_eps=1e-7,          # 'rmsprop': g / sqrt(mean square + eps), as Keras' RMSprop
      weight_decay=1e-3,     # L2 added to the gradient, as the Caffe solver of the paper did
      schedule="step",       # 'constant' | 'step' | 'linear_decay'
      boundaries=(200_000, 375_000),  # 'step': lr x scales[i] from boundaries[i]
      scales=(1 / 3, 0.1),
      decay_start=0,         # 'linear_decay': constant until here, then linear to 0 at the end
      grad_clip_norm=0.0,    # 0 = off
      ema_decay=0.0,         # EMA of generator params for eval; 0 = off
      frozen=("model_out",),  # param names (path parts) that are never updated
      disc_lr=2e-4, disc_b1=0.5, disc_b2=0.999,
  ))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=32,         # global batch
      steps=450_000,
      pretrain_steps=0,      # first steps with the regression loss only (two-stage GAN)
      log_every=50,
      eval_every=5000,
      checkpoint_every=5000,
      keep_checkpoints=3,
      best_metric="eval/model/auc",
      best_mode="max",
      eval_batch_size=8,
      samples=4,             # images in the gray|model|truth grid
  ))

  c.eval = ml_collections.ConfigDict(dict(
      fid_weights="",        # InceptionV3 .pth (as `colorjax eval --fid-weights`): adds the
                             # periodic eval's eval/model/fid and eval/gray/fid ('' = no FID)
      fid_batch_size=16,     # images per InceptionV3 call
  ))
  return c


# ----------------------------------------------------------------------------------------------
# Variants
# ----------------------------------------------------------------------------------------------


def _tiny(c: ml_collections.ConfigDict) -> None:
  """A few seconds per step on a laptop CPU: for tests and smoke runs."""
  c.model.width = 1 / 16
  c.model.ngf = 4
  c.disc.ndf = 4
  c.data.crop_size = 32
  c.data.resize_size = 40
  c.data.eval_size = 32
  c.data.eval_images = 8
  c.data.num_threads = 1
  c.train.batch_size = 8
  c.train.steps = 4
  c.train.log_every = 1
  c.train.eval_every = 4
  c.train.checkpoint_every = 2
  c.train.eval_batch_size = 8
  c.train.samples = 2
  c.optimizer.lr = 1e-3


def _quickstart(c: ml_collections.ConfigDict) -> None:
  """A small model trained on the bundled photos in a few minutes on a CPU."""
  c.model.width = 0.25
  c.model.ngf = 16
  c.disc.ndf = 16
  c.data.crop_size = 64
  c.data.resize_size = 80
  c.data.eval_size = 96
  c.train.batch_size = 8
  c.train.steps = 300
  c.train.log_every = 20
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "constant"


def _bf16(c: ml_collections.ConfigDict) -> None:
  c.model.dtype = "bfloat16"


COMMON_VARIANTS: dict[str, Callable[[ml_collections.ConfigDict], None]] = {
    "tiny": _tiny, "quickstart": _quickstart, "bf16": _bf16,
}


def apply_variants(config: ml_collections.ConfigDict, arg: str | None,
                   extra: Mapping[str, Callable[[ml_collections.ConfigDict], None]] | None = None,
                   ) -> ml_collections.ConfigDict:
  """Applies comma-separated variants (`tiny,bf16`); recipe-specific ones come in `extra`."""
  variants = {**COMMON_VARIANTS, **(extra or {})}
  for name in filter(None, (arg or "").split(",")):
    if name not in variants:
      raise ValueError(f"unknown config variant {name!r}; known: {sorted(variants)}")
    variants[name](config)
  return config


# ----------------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------------


def resolve_config_path(spec: str) -> str:
  """'configs/eccv16.py:tiny', 'eccv16:tiny' or 'eccv16' -> an existing 'path.py[:arg]'."""
  path, sep, arg = spec.partition(":")
  candidates = [pathlib.Path(path)]
  if not path.endswith(".py"):
    candidates.append(pathlib.Path(path + ".py"))
  name = pathlib.Path(path).name
  candidates.append(REPO_CONFIGS_DIR / (name if name.endswith(".py") else name + ".py"))
  for candidate in candidates:
    if candidate.is_file():
      return str(candidate) + sep + arg
  raise FileNotFoundError(
      f"config {path!r} not found (looked for {', '.join(str(c) for c in candidates)})")


def recipe_module(name: str):
  """The module of `configs/<name>.py`, for recipes that start from another recipe's config."""
  path = REPO_CONFIGS_DIR / f"{name}.py"
  if not path.is_file():
    raise FileNotFoundError(f"recipe {name!r} not found: {path} is missing")
  module_spec = importlib.util.spec_from_file_location(f"colorjax_config_{pathlib.Path(path).stem}",
                                                       path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file spec (see `resolve_config_path`)."""
  path, _, arg = resolve_config_path(spec).partition(":")
  module_spec = importlib.util.spec_from_file_location(f"colorjax_config_{pathlib.Path(path).stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None) if arg else module.get_config()
  validate(config)
  return config


def _check_choice(config, key: str, choices) -> None:
  value = config
  for part in key.split("."):
    value = value[part]
  if value not in choices:
    raise ValueError(f"config key {key}={value!r} is not one of {list(choices)}")


def _check_positive(config, key: str, allow_zero: bool = False) -> None:
  value = config
  for part in key.split("."):
    value = value[part]
  if value < 0 or (value == 0 and not allow_zero):
    raise ValueError(f"config key {key}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key of the first invalid value; missing keys raise too."""
  reference = base_config()
  _check_same_keys(config, reference, "")
  _check_finite(config, "")
  _check_choice(config, "model.name", MODEL_NAMES)
  _check_choice(config, "model.output", OUTPUTS)
  _check_choice(config, "model.convention", ("eccv16", "pix2pix"))
  _check_choice(config, "model.dtype", DTYPES)
  _check_choice(config, "model.semantic_backbone", BACKBONES)
  _check_choice(config, "model.semantic_fusion", SEMANTIC_FUSIONS)
  _check_choice(config, "loss.kind", LOSS_KINDS)
  _check_choice(config, "loss.gan", GAN_LOSSES)
  _check_choice(config, "optimizer.schedule", SCHEDULES)
  _check_choice(config, "optimizer.name", OPTIMIZERS)
  _check_choice(config, "distributed", ("auto", "on", "off"))
  _check_choice(config, "train.best_mode", ("max", "min"))
  for key in ("train.batch_size", "train.steps", "train.log_every", "train.eval_every",
              "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size",
              "data.crop_size", "data.eval_size", "optimizer.lr", "model.width", "model.ngf",
              "model.temperature", "loss.soft_k", "loss.soft_sigma", "optimizer.rms_eps",
              "eval.fid_batch_size"):
    _check_positive(config, key)
  for key in ("train.pretrain_steps", "data.eval_images", "data.num_workers", "data.min_chroma",
              "optimizer.weight_decay", "optimizer.grad_clip_norm", "loss.l1_weight",
              "loss.gan_weight", "loss.perceptual_weight", "data.cutout", "data.rotate_degrees",
              "data.blur_sigma", "train.samples", "data.resize_size"):
    _check_positive(config, key, allow_zero=True)
  if not 0.0 <= config.data.eval_fraction < 1.0:
    raise ValueError(f"config key data.eval_fraction={config.data.eval_fraction} must be in [0, 1)")
  if not 0.0 <= config.optimizer.rms_decay < 1.0:
    raise ValueError(
        f"config key optimizer.rms_decay={config.optimizer.rms_decay} must be in [0, 1)")
  if not 0.0 <= config.optimizer.ema_decay < 1.0:
    raise ValueError(f"config key optimizer.ema_decay={config.optimizer.ema_decay} must be in [0, 1)")
  if not 0.0 <= config.loss.rebalance_lambda <= 1.0:
    raise ValueError(
        f"config key loss.rebalance_lambda={config.loss.rebalance_lambda} must be in [0, 1]")
  if config.loss.soft_k > 313:
    raise ValueError(f"config key loss.soft_k={config.loss.soft_k} must be <= 313")
  if len(config.optimizer.boundaries) != len(config.optimizer.scales):
    raise ValueError("config keys optimizer.boundaries and optimizer.scales must have equal length")
  # A 'bins' model may also regress its decoded (annealed-mean) ab, as the GAN fine-tuning of
  # ECCV16 in seed 000 does; without a discriminator that throws away what 'bins' is for.
  if config.loss.kind == "soft_ce" and config.model.output != "bins":
    raise ValueError(f"config key loss.kind='soft_ce' needs model.output='bins', got "
                     f"{config.model.output!r}")
  if (config.model.output == "bins" and config.loss.kind != "soft_ce"
      and not config.disc.enabled):
    raise ValueError(
        f"config key loss.kind={config.loss.kind!r} does not fit model.output='bins': a bins "
        "model trains with 'soft_ce', or regresses its decoded ab only as a GAN generator "
        "(disc.enabled=True)")
  if config.model.name == "eccv16" and config.model.output != "bins":
    raise ValueError("config key model.output must be 'bins' for model.name='eccv16'")
  if config.model.output == "bins" and config.model.name != "eccv16":
    # The other generators end in tanh, which would bound the 313 logits to [-1, 1].
    raise ValueError(f"config key model.output='bins' needs model.name='eccv16', got "
                     f"{config.model.name!r}: use 'ab' or 'rgb'")
  if config.data.resize_size and config.data.resize_size < config.data.crop_size:
    raise ValueError(f"config key data.resize_size={config.data.resize_size} must be 0 or >= "
                     f"data.crop_size={config.data.crop_size}")
  if config.model.name == "eccv16" and config.data.crop_size % 8:
    raise ValueError(f"config key data.crop_size={config.data.crop_size} must be a multiple of 8 "
                     "for ECCV16 (three stride-2 stages)")
  if config.disc.enabled and config.model.output == "rgb":
    raise ValueError("config key disc.enabled needs model.output 'ab' or 'bins' (D sees L and ab)")
  _validate_gan_and_semantic(config)
  _validate_fid(config)


def _validate_fid(config: ml_collections.ConfigDict) -> None:
  """FID during training, and FID as the best-checkpoint metric (lower is better)."""
  if config.eval.fid_weights and config.data.eval_images == 1:
    raise ValueError("config key data.eval_images=1: eval.fid_weights needs at least 2 images "
                     "(or 0 = all)")
  best = config.train.best_metric
  if best.endswith("/fid"):
    if not config.eval.fid_weights:
      raise ValueError(f"config key train.best_metric={best!r} needs eval.fid_weights (an "
                       "InceptionV3 .pth file)")
    if config.train.best_mode != "min":
      raise ValueError(f"config key train.best_mode={config.train.best_mode!r} must be 'min' for "
                       f"train.best_metric={best!r} (a lower FID is better)")


def _validate_gan_and_semantic(config: ml_collections.ConfigDict) -> None:
  """The keys of the GAN, perceptual-loss and semantic-conditioning recipes."""
  m = config.model
  _check_positive(config, "model.semantic_width")
  _check_positive(config, "model.semantic_input_size", allow_zero=True)
  if not 0.0 <= m.encoder_dropout < 1.0:
    raise ValueError(f"config key model.encoder_dropout={m.encoder_dropout} must be in [0, 1)")
  if m.encoder_dropout and m.name != "unet":
    raise ValueError(f"config key model.encoder_dropout needs model.name='unet', got {m.name!r}")
  if m.semantic_backbone and m.name == "eccv16":
    raise ValueError(f"config key model.semantic_backbone={m.semantic_backbone!r} needs "
                     f"model.name 'unet', 'fusion' or 'feature_decoder' (got {m.name!r}): "
                     "ECCV16 has no semantic input")
  if m.name in ("fusion", "feature_decoder"):
    if not m.semantic_backbone:
      raise ValueError(f"config key model.semantic_backbone must be set for "
                       f"model.name={m.name!r}")
    if m.output == "bins":
      raise ValueError(f"config key model.output must be 'ab' or 'rgb' for model.name={m.name!r}")
  if m.name == "feature_decoder" and m.semantic_backbone not in ("vgg16", "resnet18"):
    raise ValueError(f"config key model.semantic_backbone={m.semantic_backbone!r}: "
                     "model.name='feature_decoder' decodes the map of 'vgg16' or 'resnet18'")
  if m.semantic_fusion == "input" and m.semantic_backbone and m.name != "unet":
    raise ValueError("config key model.semantic_fusion='input' needs model.name='unet'")
  if m.semantic_fusion == "input" and m.semantic_backbone not in ("", "vgg16", "resnet18"):
    raise ValueError(f"config key model.semantic_fusion='input' needs a 'vgg16' or 'resnet18' "
                     f"backbone, got {m.semantic_backbone!r}")
  if m.semantic_backbone == "inception_v3" and m.semantic_input_size < 75:
    raise ValueError(f"config key model.semantic_input_size={m.semantic_input_size} must be "
                     ">= 75 for inception_v3 (299 in report 001)")
  if m.semantic_weights and not m.semantic_backbone:
    raise ValueError("config key model.semantic_weights is set but model.semantic_backbone is ''")
  if m.semantic_weights and m.semantic_width != 1.0:
    raise ValueError(f"config key model.semantic_width={m.semantic_width} must be 1.0 when "
                     "model.semantic_weights is given (pretrained weights have the full width)")
  if config.disc.semantic and not (config.disc.enabled and m.semantic_backbone):
    raise ValueError("config key disc.semantic needs disc.enabled=True and a "
                     "model.semantic_backbone")
  bad = [name for name in config.loss.perceptual_layers if name not in VGG19_RELU_LAYERS]
  if bad:
    raise ValueError(f"config key loss.perceptual_layers: {bad} are not VGG19 ReLU outputs; "
                     f"use some of {list(VGG19_RELU_LAYERS)}")
  if config.loss.perceptual_weight > 0 and not config.loss.perceptual_layers:
    raise ValueError("config key loss.perceptual_layers is empty but loss.perceptual_weight > 0")


def _check_finite(config, prefix: str) -> None:
  """Every float (alone or in a tuple) is finite: 1e999 parses to inf and nan would pass `< 0`."""
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, f"{prefix}{key}.")
      continue
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, float) and not math.isfinite(item):
        raise ValueError(f"config key {prefix}{key}={value!r} must be a finite number")


def _check_same_keys(config, reference, prefix: str) -> None:
  for key in reference.keys():
    if key not in config:
      raise ValueError(f"config key {prefix}{key} is missing")
  for key, value in config.items():
    if key not in reference:
      raise ValueError(f"config key {prefix}{key} is unknown")
    if isinstance(value, ml_collections.ConfigDict):
      _check_same_keys(value, reference[key], f"{prefix}{key}.")


def _parse_value(key: str, text: str, current):
  """Parses an override's text into the type of the value it replaces."""
  import ast  # pylint: disable=g-import-not-at-top
  if isinstance(current, bool):
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ValueError(f"config key {key} takes true/false, got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"config key {key}: cannot parse {text!r} as {type(current).__name__}") from e
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, (list, tuple)):
    value = tuple(value)
  elif isinstance(current, tuple):
    value = (value,)
  if type(value) is not type(current):  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f"config key {key} takes a {type(current).__name__}, got {text!r}")
  return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, str]
                    ) -> ml_collections.ConfigDict:
  """Sets `{'optimizer.lr': '1e-4', ...}` (text from the command line), type-checked, then validates."""
  for key, text in overrides.items():
    node = config
    parts = key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ValueError(f"config key {'.'.join(parts[:i + 1])} is unknown (in --config.{key})")
      if i < len(parts) - 1:
        node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
      raise ValueError(f"config key {key} is a group; set one of its keys: {sorted(current)}")
    node[parts[-1]] = _parse_value(key, text, current)
  validate(config)
  return config


# Config values that name files or folders, with the values that are not paths.
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "data.train": ("bundled",),
    "data.eval": ("bundled",),
    "model.init_from": (),
    "model.semantic_weights": (),
    "loss.prior_file": (),
    "loss.perceptual_weights": ("random",),
    "eval.fid_weights": (),
}


def with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose file and folder values are absolute (`paths.absolute`).

  Called where a config enters training, so the run (and its `config.json`) does not depend on
  the directory it was started from.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  for key, non_paths in PATH_KEYS.items():
    group, name = key.split(".")
    if group in config and name in config[group] and config[group][name] not in non_paths:
      config[group][name] = paths.absolute(config[group][name])
  return config

