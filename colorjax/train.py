"""Training: the train state, the jitted train step and the loop, for every recipe.

`train_and_evaluate(config, workdir)` is the single entry point (the CLI and notebooks call it).
It runs, in this order: distributed init and mesh, input pipeline, prior, model and optimizer,
state creation on the mesh, checkpoint restore, then the loop (step, log, eval, checkpoint).

The train state is a plain pytree, replicated over the mesh:
  {'step': int32[], 'rng': uint32[2],
   'gen':  {'params', 'batch_stats', 'opt_state'[, 'ema_params']},
   'disc': {'params', 'batch_stats', 'opt_state'}}        # GAN recipes only
The step is `(state, batch) -> (state, metrics)` with the batch `{'rgb': uint8 BHW3}` split over
the `data` axis; Lab conversion, normalisation and soft encoding happen inside the step.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import signal
import threading
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from clu import metrics as clu_metrics
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from colorjax import checkpoint, color, data, evaluate, losses, models, sharding
from colorjax import config as config_lib
from colorjax import flops, inference, paths, perceptual, torch_weights, writers
from colorjax import prior as prior_lib
from colorjax.models import eccv16, heads, inception, semantic
from colorjax.ops import xla_cpu

_log = logging.getLogger(__name__)

State = dict[str, Any]


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf; the message names the step. The last checkpoint is kept."""


# ----------------------------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------------------------


def create_schedule(opt: ml_collections.ConfigDict, lr: float, total_steps: int) -> optax.Schedule:
  if opt.schedule == "constant":
    return optax.constant_schedule(lr)
  if opt.schedule == "step":
    boundaries, scales = tuple(opt.boundaries), tuple(opt.scales)
    ratios = [s / p for s, p in zip(scales, (1.0,) + scales[:-1])]
    return optax.piecewise_constant_schedule(lr, dict(zip(boundaries, ratios)))
  if opt.schedule == "linear_decay":
    start = min(opt.decay_start, total_steps)
    return optax.join_schedules(
        [optax.constant_schedule(lr),
         optax.linear_schedule(lr, 0.0, max(total_steps - start, 1))], [start])
  raise ValueError(f"unknown optimizer.schedule {opt.schedule!r}")


def _frozen_labels(params: Any, frozen_names: tuple[str, ...]) -> Any:
  def label(path, _):
    names = {getattr(k, "key", str(k)) for k in path}
    return "frozen" if names & set(frozen_names) else "trained"
  return jax.tree_util.tree_map_with_path(label, params)


def create_optimizer(opt: ml_collections.ConfigDict, total_steps: int, *, lr: float, b1: float,
                     b2: float, weight_decay: float, name: str = "adam"
                     ) -> optax.GradientTransformation:
  """Adam (or RMSProp) with (coupled) L2 weight decay, optional clipping, a schedule, frozen
  params masked.

  RMSProp is Keras' (the reports' framework): mean square decayed by `opt.rms_decay` from zero,
  no momentum, update lr * g / sqrt(mean square + `opt.rms_eps`), no bias correction.
  """
  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if weight_decay > 0:
    parts.append(optax.add_decayed_weights(weight_decay))
  if name == "adam":
    parts.append(optax.scale_by_adam(b1=b1, b2=b2))
  elif name == "rmsprop":
    parts.append(optax.scale_by_rms(decay=opt.rms_decay, eps=opt.rms_eps, eps_in_sqrt=True))
  else:
    raise ValueError(f"unknown optimizer.name {name!r}")
  parts.append(optax.scale_by_learning_rate(create_schedule(opt, lr, total_steps)))
  tx = optax.chain(*parts)
  frozen = tuple(opt.frozen)
  if not frozen:
    return tx
  return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                               functools.partial(_frozen_labels, frozen_names=frozen))


# ----------------------------------------------------------------------------------------------
# Model bundle and state
# ----------------------------------------------------------------------------------------------


class Pretrained(NamedTuple):
  """Host variables that `init_state` puts over the random ones of one part of the state.

  variables: {collection: subtree}, e.g. {'params': {'semantic_backbone': {...}}}.
  source: the config key (and file) they come from, for error messages.
  whole_model: True when they must cover every variable of the part (`model.init_from`).
  """
  variables: Mapping[str, Any]
  source: str
  whole_model: bool = False


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything the step needs besides state and batch; bound with functools.partial.

  `perceptual` is the VGG19 of the perceptual loss (None when loss.perceptual_weight is 0); its
  constant variables travel in the state, `state['perceptual'] = {'params': ...}` (saved with
  it, never updated), not in the step's closure, so they are not compiled into the step as
  constants. `initial` maps 'gen' / 'disc' / 'perceptual' to the `Pretrained` variables read from
  the files the config names (semantic backbone, `model.init_from`, VGG19); they are constants
  of the jitted `init_state` only, and a restored checkpoint replaces them.
  """
  generator: nn.Module
  discriminator: nn.Module | None
  gen_tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation | None
  model_cfg: ml_collections.FrozenConfigDict
  loss_cfg: ml_collections.FrozenConfigDict
  ema_decay: float
  class_weights: np.ndarray  # (313,) rebalancing weights (soft_ce only)
  perceptual: nn.Module | None = None
  initial: Mapping[str, Pretrained] = dataclasses.field(default_factory=dict)
  # The steps whose metrics the loop logs: multiples of these, and `last_step` (0: none; see
  # `log_schedule`). Gradient norms are computed at those steps only (see `_gradient_norm`).
  logged_every: tuple[int, ...] = (1,)
  last_step: int = 0


def create_setup(config: ml_collections.ConfigDict, class_weights: np.ndarray | None) -> Setup:
  """Models, optimizers and the host-side initial variables of `config` (weights files are read
  here, once). A frozen semantic backbone (model.semantic_trainable=False) joins
  `optimizer.frozen` by its name, so neither optimizer updates nor decays it."""
  generator = models.create_generator(config.model, config.data.crop_size)
  opt = config.optimizer
  if config.model.semantic_backbone and not config.model.semantic_trainable:
    opt = opt.copy_and_resolve_references()
    opt.frozen = tuple(opt.frozen) + (semantic.BACKBONE_NAME,)
  gen_tx = create_optimizer(opt, config.train.steps, lr=opt.lr, b1=opt.b1, b2=opt.b2,
                            weight_decay=opt.weight_decay, name=opt.name)
  discriminator = disc_tx = None
  if config.disc.enabled:
    discriminator = models.create_discriminator(config.disc, config.model)
    disc_tx = create_optimizer(opt, config.train.steps, lr=opt.disc_lr, b1=opt.disc_b1,
                               b2=opt.disc_b2, weight_decay=0.0)
  if class_weights is None:
    class_weights = np.ones((color.Q,), np.float32)
  initial = _initial_variables(config)
  perceptual_net = None
  if config.loss.perceptual_weight > 0:
    layers = tuple(config.loss.perceptual_layers)
    dtype = jnp.bfloat16 if config.model.dtype == "bfloat16" else None
    perceptual_net = perceptual.create_network(layers, dtype=dtype)
    initial["perceptual"] = Pretrained(
        perceptual.load_variables(config.loss.perceptual_weights, layers),
        f"loss.perceptual_weights={config.loss.perceptual_weights}")
  return Setup(generator, discriminator, gen_tx, disc_tx,
               ml_collections.FrozenConfigDict(config.model),
               ml_collections.FrozenConfigDict(config.loss),
               float(opt.ema_decay), np.asarray(class_weights, np.float32),
               perceptual_net, initial,
               *log_schedule((config.train.log_every, config.train.eval_every,
                              config.train.checkpoint_every), config.train.steps))


def log_schedule(every: Sequence[int], last_step: int) -> tuple[tuple[int, ...], int]:
  """(logged_every, last_step) of `Setup` for a loop that logs the multiples of each of `every`
  and `last_step`, in its smallest form: multiples of a smaller period dropped, and `last_step`
  0 when a period divides it. Runs that log at the same steps then trace one and the same step
  (with log_every=1, a run of 2 steps and its resume to 4 compile once)."""
  periods = sorted(set(every))
  minimal = tuple(e for e in periods if not any(e % d == 0 for d in periods if d < e))
  return minimal, 0 if any(last_step % e == 0 for e in minimal) else last_step


def _initial_variables(config: ml_collections.ConfigDict) -> dict[str, Pretrained]:
  """Pretrained generator / discriminator variables named by the config, read on the host.

  `model.semantic_weights` go to the backbone of G (and of D with disc.semantic);
  `model.init_from` replaces all of G, its semantic backbone included.
  """
  m, initial = config.model, {}
  if m.semantic_backbone and m.semantic_weights:
    backbone = semantic.semantic_backbone_variables(m.semantic_backbone, m.semantic_weights)
    nested = Pretrained({col: {semantic.BACKBONE_NAME: tree} for col, tree in backbone.items()},
                        f"model.semantic_weights={m.semantic_weights}")
    initial["gen"] = nested
    if config.disc.enabled and config.disc.semantic:
      initial["disc"] = nested
  elif m.semantic_backbone:
    _log.warning(
        "model.semantic_weights is '': the %s semantic backbone has RANDOM weights, so its "
        "conditioning carries no semantics (fine for tests, meaningless for results)",
        m.semantic_backbone)
  if m.init_from:
    if m.name == "eccv16" and str(m.init_from).endswith((".pth", ".pt")):
      variables = eccv16.load_torch_eccv16(m.init_from, width=m.width)
    else:
      _, variables = checkpoint.load_model(m.init_from)
    initial["gen"] = Pretrained(dict(variables), f"model.init_from={m.init_from}",
                                whole_model=True)
  return initial


def _overlay(fresh: Mapping[str, Any], loaded: Mapping[str, Any], source: str,
             require_all: bool) -> dict[str, Any]:
  """`fresh` variables with every leaf of `loaded` put in its place (same path and shape)."""
  fresh_leaves = dict(jax.tree_util.tree_flatten_with_path(fresh)[0])
  loaded_leaves = jax.tree_util.tree_flatten_with_path(dict(loaded))[0]
  names = lambda path: "/".join(str(getattr(k, "key", k)) for k in path)
  problems = [f"{names(p)}: not in the model" for p, _ in loaded_leaves if p not in fresh_leaves]
  problems += [f"{names(p)}: shape {np.shape(v)} != {fresh_leaves[p].shape}"
               for p, v in loaded_leaves
               if p in fresh_leaves and tuple(np.shape(v)) != tuple(fresh_leaves[p].shape)]
  if require_all:
    loaded_paths = {p for p, _ in loaded_leaves}
    problems += [f"{names(p)}: missing" for p in fresh_leaves if p not in loaded_paths]
  if problems:
    raise ValueError(f"{source} does not fit the model of this config: " + "; ".join(
        problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""))
  replace = {p: jnp.asarray(v, fresh_leaves[p].dtype) for p, v in loaded_leaves}
  return jax.tree_util.tree_map_with_path(lambda p, x: replace.get(p, x), dict(fresh))


def _init_module(module: nn.Module, tx, rng, x) -> dict[str, Any]:
  variables = module.init({"params": rng, "dropout": rng}, x, train=False)
  params = variables["params"]
  return {"params": params, "batch_stats": variables.get("batch_stats", {}),
          "opt_state": tx.init(params)}


def init_state(setup: Setup, seed: int, crop_size: int, ema: bool) -> State:
  """A fresh train state (pure; jit it with out_shardings to create it on the mesh).

  Parameters are drawn with the 'rbg' PRNG, whose initialisers compile several times faster
  on CPU than threefry's; the state's own rng (dropout) stays threefry, which gives the same
  numbers however the batch is partitioned.
  """
  gen_key, disc_key = jax.random.split(jax.random.key(seed, impl="rbg"))
  l_shape = (1, crop_size, crop_size, 1)
  state = {"step": jnp.zeros((), jnp.int32),
           "rng": jax.random.fold_in(jax.random.PRNGKey(seed), 1),
           "gen": _init_module(setup.generator, setup.gen_tx, gen_key, jnp.zeros(l_shape))}
  if setup.discriminator is not None:
    state["disc"] = _init_module(setup.discriminator, setup.disc_tx, disc_key,
                                 jnp.zeros((1, crop_size, crop_size, 3)))
  # Pretrained variables (read by create_setup) replace the random ones, before the optimizer
  # state and the EMA are derived from them.
  for part, tx in (("gen", setup.gen_tx), ("disc", setup.disc_tx)):
    pretrained = setup.initial.get(part)
    if pretrained is None or part not in state:
      continue
    fresh = {k: state[part][k] for k in ("params", "batch_stats")}
    merged = _overlay(fresh, pretrained.variables, pretrained.source,
                      require_all=pretrained.whole_model)
    state[part] = {**merged, "opt_state": tx.init(merged["params"])}
  if ema:
    state["gen"]["ema_params"] = state["gen"]["params"]
  if setup.perceptual is not None:
    state["perceptual"] = {"params": jax.tree.map(
        jnp.asarray, setup.initial["perceptual"].variables["params"])}
  return state


def create_state(setup: Setup, config: ml_collections.ConfigDict, mesh) -> tuple[State, Any]:
  """Creates the replicated state directly on the mesh; returns it and its shardings."""
  init = functools.partial(init_state, setup, config.seed, config.data.crop_size,
                           config.optimizer.ema_decay > 0)
  abstract = jax.eval_shape(init)
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh), abstract)
  state = jax.jit(init, out_shardings=shardings)()
  return state, shardings


def abstract_state(state: State, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)


# ----------------------------------------------------------------------------------------------
# The step
# ----------------------------------------------------------------------------------------------


def split_lab(rgb_BHW3: jax.Array, convention: str) -> tuple[jax.Array, jax.Array]:
  """uint8 RGB -> (normalised L input `l_BHW1`, true ab in Lab units `ab_BHW2`)."""
  lab = color.rgb_to_lab(rgb_BHW3)
  return color.normalize_l(lab[..., :1], convention), lab[..., 1:]


def _apply_train(module: nn.Module, params, batch_stats, x, rng):
  out, mutated = module.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                              mutable=["batch_stats"], rngs={"dropout": rng})
  return out, mutated.get("batch_stats", batch_stats)


def _reconstruction_loss(setup: Setup, out, rgb, ab_true) -> jax.Array:
  loss_cfg = setup.loss_cfg
  if loss_cfg.kind == "soft_ce":
    return losses.soft_ce(out, ab_true, jnp.asarray(setup.class_weights),
                          k=loss_cfg.soft_k, sigma=loss_cfg.soft_sigma)
  target = heads.regression_target(setup.model_cfg, rgb, ab_true)
  return losses.regression(heads.regression_output(out, setup.model_cfg, *ab_true.shape[1:3]),
                           target, loss_cfg.kind, loss_cfg.l1_mse_p)


# A gradient norm that was not computed (the step is not one the loop logs).
NOT_COMPUTED = -1.0
_STEP_NORMS = ("train/grad_norm", "train/d_grad_norm")


def _is_logged(setup: Setup, step):
  """Whether the loop logs the metrics of (1-based) `step`: a host int or a traced array."""
  logged = step == setup.last_step
  for every in setup.logged_every:  # positive (config validation)
    logged = logged | (step % every == 0)
  return logged


def _gradient_norm(setup: Setup, step: jax.Array, grads) -> jax.Array:
  """optax.tree.norm(grads) at the steps the loop logs (1-based `step`), NOT_COMPUTED elsewhere.

  It is a pass over every gradient, 3-4% of the pix2pix step on CPU, for a number that is read
  once per log interval.
  """
  return jax.lax.cond(_is_logged(setup, step), lambda g: optax.tree.norm(g).astype(jnp.float32),
                      lambda g: jnp.asarray(NOT_COMPUTED, jnp.float32), grads)


def _update(tx, params, opt_state, grads):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def train_step(state: State, batch: Mapping[str, jax.Array], *, setup: Setup,
               adversarial: bool) -> tuple[State, dict[str, jax.Array]]:
  """One optimisation step: D (when `adversarial`) then G. Pure; jit with donate_argnums=0."""
  rng = jax.random.fold_in(state["rng"], state["step"])
  gen_rng, disc_rng = jax.random.split(rng)
  l_norm, ab_true = split_lab(batch["rgb"], setup.model_cfg.convention)
  height, width = ab_true.shape[1:3]
  gen, metrics = state["gen"], {}
  new_state = dict(state)
  loss_cfg = setup.loss_cfg

  # The generator runs forward once: its output feeds D's update, then G's loss, whose gradient
  # w.r.t. that output is pulled back through the same linearisation (same dropout mask).
  def gen_forward(params):
    return _apply_train(setup.generator, params, gen["batch_stats"], l_norm, gen_rng)

  out, gen_pullback, gen_bs = jax.vjp(gen_forward, gen["params"], has_aux=True)

  if adversarial:
    disc = state["disc"]
    fake = jnp.concatenate([l_norm, jax.lax.stop_gradient(
        heads.fake_ab_norm(out, setup.model_cfg, height, width))], axis=-1)
    real = jnp.concatenate([l_norm, color.normalize_ab(ab_true)], axis=-1)

    def disc_loss_fn(params):
      fake_logits, bs = _apply_train(setup.discriminator, params, disc["batch_stats"], fake,
                                     disc_rng)
      real_logits, bs = _apply_train(setup.discriminator, params, bs, real, disc_rng)
      real_loss, fake_loss = losses.discriminator_loss_terms(real_logits, fake_logits,
                                                             loss_cfg.gan)
      return 0.5 * (real_loss + fake_loss), (bs, real_loss, fake_loss)

    (d_loss, (disc_bs, d_real, d_fake)), d_grads = jax.value_and_grad(
        disc_loss_fn, has_aux=True)(disc["params"])
    d_params, d_opt = _update(setup.disc_tx, disc["params"], disc["opt_state"], d_grads)
    new_state["disc"] = {"params": d_params, "batch_stats": disc_bs, "opt_state": d_opt}
    metrics["train/d_loss"] = d_loss
    metrics["train/d_loss_real"] = d_real
    metrics["train/d_loss_fake"] = d_fake
    metrics["train/d_grad_norm"] = _gradient_norm(setup, state["step"] + 1, d_grads)

  def gen_loss_fn(out):
    rec = _reconstruction_loss(setup, out, batch["rgb"], ab_true)
    terms = {"train/rec_loss": rec}
    total = rec
    if adversarial:
      fake_ab = heads.fake_ab_norm(out, setup.model_cfg, height, width)
      fake_logits, _ = _apply_train(setup.discriminator, new_state["disc"]["params"],
                                    new_state["disc"]["batch_stats"],
                                    jnp.concatenate([l_norm, fake_ab], axis=-1), disc_rng)
      gan = losses.generator_gan_loss(fake_logits, loss_cfg.gan)
      l1 = jnp.mean(jnp.abs(fake_ab - color.normalize_ab(ab_true)))
      terms["train/g_gan_loss"] = gan
      terms["train/g_l1_loss"] = l1
      total = loss_cfg.gan_weight * gan + loss_cfg.l1_weight * l1
      if loss_cfg.kind == "soft_ce":
        total = total + rec
    # Pretraining steps of a GAN recipe use the regression loss alone (seed 000: stage 1 is MSE).
    if setup.perceptual is not None and (adversarial or setup.discriminator is None):
      rgb_pred = heads.predicted_rgb(out, setup.model_cfg, l_norm)
      rgb_true = batch["rgb"].astype(jnp.float32) / 255.0
      p_loss = perceptual.perceptual_loss(setup.perceptual, state["perceptual"], rgb_pred,
                                          rgb_true, loss_cfg.perceptual_layers)
      terms["train/perceptual_loss"] = p_loss
      total = total + loss_cfg.perceptual_weight * p_loss
    return total, terms

  (loss, terms), d_out = jax.value_and_grad(gen_loss_fn, has_aux=True)(out)
  (grads,) = gen_pullback(d_out)
  params, opt_state = _update(setup.gen_tx, gen["params"], gen["opt_state"], grads)
  new_gen = {"params": params, "batch_stats": gen_bs, "opt_state": opt_state}
  if "ema_params" in gen:
    new_gen["ema_params"] = optax.incremental_update(params, gen["ema_params"],
                                                     1.0 - setup.ema_decay)
  new_state["gen"] = new_gen
  new_state["step"] = state["step"] + 1
  metrics.update(terms)
  metrics["train/loss"] = loss
  metrics["train/grad_norm"] = _gradient_norm(setup, state["step"] + 1, grads)
  # train/param_norm is computed by the loop at log steps (with_param_norm), for the same reason.
  return new_state, metrics


@jax.jit
def with_param_norm(params, metrics: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
  """`metrics` and train/param_norm, the global norm of `params` (G's, after the step)."""
  return {**metrics, "train/param_norm": optax.tree.norm(params)}


# ----------------------------------------------------------------------------------------------
# Averages over the steps between two logs
# ----------------------------------------------------------------------------------------------


def _average_of(name: str) -> type[clu_metrics.Average]:
  """clu's Average of the model output `name`, empty for a step without it (a GAN's D terms
  during its pretraining steps), so a term's mean is over the steps that have it."""

  @flax.struct.dataclass
  class AverageOf(clu_metrics.Average):

    @classmethod
    def from_model_output(cls, **outputs) -> clu_metrics.Average:
      return super().from_model_output(outputs[name]) if name in outputs else cls.empty()

  return AverageOf


@flax.struct.dataclass
class FirstNonFiniteStep(clu_metrics.Metric):
  """The first step whose loss terms were not all finite (NaN or Inf); 0 while none was."""
  step: jax.Array

  @classmethod
  def empty(cls) -> FirstNonFiniteStep:
    return cls(step=jnp.zeros((), jnp.int32))

  @classmethod
  def from_model_output(cls, *, step: jax.Array, finite: jax.Array, **_) -> FirstNonFiniteStep:
    return cls(step=jnp.where(finite, 0, step).astype(jnp.int32))

  def merge(self, other: FirstNonFiniteStep) -> FirstNonFiniteStep:  # `other` is the later one
    return type(self)(step=jnp.where(self.step > 0, self.step, other.step))

  def compute(self) -> jax.Array:
    return self.step


def averaged_metrics(setup: Setup) -> tuple[str, ...]:
  """The step metrics (without 'train/') the loop logs as means over the steps since the last
  log: the loss terms. The gradient norms (and the loop's train/param_norm) are the logged
  step's own values."""
  names = ["loss", "rec_loss"]
  if setup.discriminator is not None:
    names += ["d_loss", "g_gan_loss", "g_l1_loss"]
  if setup.perceptual is not None:
    names.append("perceptual_loss")
  return tuple(names)


def make_accumulate(setup: Setup) -> Callable:
  """`accumulate(averages, metrics, step)`: a clu Collection of the loss terms' means since the
  last log (`averages`; None starts one) with one step's `metrics` merged in, on the devices.
  `step` is the (1-based) step number as an array (the new state's 'step')."""
  names = averaged_metrics(setup)
  collection = clu_metrics.Collection.create(
      first_nonfinite_step=FirstNonFiniteStep, **{name: _average_of(name) for name in names})

  @jax.jit
  def accumulate(averages, metrics: Mapping[str, jax.Array], step: jax.Array):
    terms = {name: metrics[f"train/{name}"] for name in names if f"train/{name}" in metrics}
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in terms.values()]))
    update = collection.single_from_model_output(step=step, finite=finite, **terms)
    return update if averages is None else averages.merge(update)

  return accumulate


def _read_averages(averages: clu_metrics.Collection) -> tuple[dict[str, float], int]:
  """The host means {'train/NAME': mean} of the terms with steps, and the first non-finite step."""
  host = jax.device_get(averages)
  means = {f"train/{name}": float(np.float64(m.total) / int(m.count))
           for name, m in vars(host).items()
           if isinstance(m, clu_metrics.Average) and int(m.count) > 0}
  return means, int(host.first_nonfinite_step.step)


def make_train_step(setup: Setup, state_shardings, mesh, adversarial: bool) -> Callable:
  """The jitted step over the mesh: state replicated and donated, batch split on `data`."""
  step = functools.partial(train_step, setup=setup, adversarial=adversarial)
  return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharded(mesh)),
                 out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0,
                 compiler_options=xla_cpu.step_compiler_options(bool(setup.model_cfg.remat))
                 or None)


@dataclasses.dataclass
class Trainer:
  """What a training loop, a benchmark or a test steps with, built by `build` from a config.

  `state` is the initial state on the mesh (replicated) and `state_shardings` its shardings;
  `step(i)` is the jitted step that makes step i+1 (G alone before `train.pretrain_steps`, D
  then G after), compiled on first use.
  """
  setup: Setup
  mesh: jax.sharding.Mesh
  state: State
  state_shardings: Any
  pretrain_steps: int = 0
  _steps: dict[bool, Callable] = dataclasses.field(default_factory=dict)

  def step_fn(self, adversarial: bool) -> Callable:
    if adversarial not in self._steps:
      self._steps[adversarial] = make_train_step(self.setup, self.state_shardings, self.mesh,
                                                 adversarial)
    return self._steps[adversarial]

  def step(self, step: int) -> Callable:
    return self.step_fn(self.setup.discriminator is not None and step >= self.pretrain_steps)


def build(config: ml_collections.ConfigDict, mesh, class_weights: np.ndarray | None = None
          ) -> Trainer:
  """Model, optimizer, state on `mesh` and the step of `config` (`class_weights`: the soft-CE
  rebalancing weights, None = uniform)."""
  setup = create_setup(config, class_weights)
  state, state_shardings = create_state(setup, config, mesh)
  return Trainer(setup, mesh, state, state_shardings, config.train.pretrain_steps)


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def load_fid_variables(config: ml_collections.ConfigDict) -> dict[str, Any] | None:
  """The InceptionV3 of `eval.fid_weights` for the periodic eval's FID; None when unset."""
  path = config.eval.fid_weights
  if not path:
    return None
  try:
    return inception.load_inception(path)
  except torch_weights.WeightFileError as e:
    raise torch_weights.WeightFileError(f"config key eval.fid_weights: {e}") from None


def create_evaluator(config: ml_collections.ConfigDict, generator: nn.Module, mesh, source,
                     fid_variables: Mapping[str, Any] | None = None) -> evaluate.Evaluator:
  """The periodic evaluation of `config` on `source`: the eval-mode generator's ab (its RGB for
  model.output='rgb'), the 'center' protocol at `data.eval_size`."""
  model_cfg = dict(config.model)
  predict = inference.predict_rgb if heads.is_rgb(model_cfg) else inference.predict_ab
  return evaluate.Evaluator(
      functools.partial(predict, generator, model_cfg=model_cfg), source, mesh,
      batch_size=config.train.eval_batch_size, image_size=config.data.eval_size,
      max_images=config.data.eval_images, samples=config.train.samples,
      fid_variables=fid_variables, fid_batch_size=config.eval.fid_batch_size)


def _evaluate(evaluator: evaluate.Evaluator, state: State, step: int, writer) -> dict[str, float]:
  """Runs the evaluator on the state's generator (its EMA parameters if kept) and logs it."""
  eval_metrics, grid = evaluator.run(checkpoint.generator_variables(state))
  if eval_metrics:
    writer.write_scalars(step, eval_metrics)
  if grid is not None:
    writer.write_samples(step, grid)
  return eval_metrics


def _ranked_metrics(best_metric: str, eval_metrics: Mapping[str, float] | None, step: int
                    ) -> Mapping[str, float] | None:
  """The eval metrics a checkpoint is saved with, or None when they lack `best_metric` (an eval
  without a readable image, or with too few for FID): the checkpoint manager cannot rank those,
  and the checkpoint is then kept only while it is among the latest."""
  if not eval_metrics:
    return None
  if best_metric and best_metric not in eval_metrics:
    _log.warning("step %d: this eval has no %s; the checkpoint cannot be the best",
                 step, best_metric)
    return None
  return eval_metrics


def create_sources(data_cfg: ml_collections.ConfigDict):
  """(train, eval) image sources: `data.eval` when given, else a held-out split of `data.train`."""
  train_source = data.image_source(data_cfg.train)
  if data_cfg.eval:
    return train_source, data.image_source(data_cfg.eval, split="validation") \
        if data.find_tfds_dir(data_cfg.eval) else data.image_source(data_cfg.eval)
  return data.split_source(train_source, eval_fraction=data_cfg.eval_fraction)


def train_iterator_from_config(config: ml_collections.ConfigDict, source) -> data.TrainIterator:
  """This process's shard of the training input, as the config describes it."""
  d = config.data
  return data.create_train_iterator(
      source, batch_size_per_process=sharding.local_batch_size(config.train.batch_size),
      crop_size=d.crop_size, seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count(), min_chroma=d.min_chroma,
      augment={"flip": d.flip, "vflip": d.vflip, "rotate_degrees": d.rotate_degrees,
               "blur_sigma": d.blur_sigma, "cutout": d.cutout},
      num_threads=d.num_threads, num_workers=d.num_workers,
      resize_size=d.resize_size or d.crop_size)


def _class_weights(config, workdir, source) -> np.ndarray | None:
  if config.loss.kind != "soft_ce":
    return None
  prior = prior_lib.load_or_compute(config.loss.prior_file, workdir, source,
                                    image_size=config.data.crop_size, seed=config.seed)
  return np.asarray(color.rebalance_weights(prior, config.loss.rebalance_lambda))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the last metrics.

  `workdir` and the config's file and folder values may be relative (to the current directory),
  start with `~` or be `gs://` URLs.
  """
  workdir = paths.absolute(workdir)
  config = config_lib.with_absolute_paths(config)
  # --- Distributed init and mesh ---------------------------------------------------------------
  sharding.initialize_distributed(config.distributed)
  mesh = sharding.create_mesh()
  sharding.check_batch_size(config.train.batch_size, mesh)
  # Nothing is written to the workdir before the restore below accepts it (a workdir of another
  # model, or a missing data.train, leaves it as it was).
  checkpoint.check_workdir(workdir)
  fid_variables = load_fid_variables(config)  # once per run; a bad file fails before training

  # --- Input pipeline --------------------------------------------------------------------------
  train_source, eval_source = create_sources(config.data)
  train_iter = train_iterator_from_config(config, train_source)

  # --- Model, optimizer and state on the mesh --------------------------------------------------
  # The class weights only weight the loss (not the state's shapes): the prior they come from
  # is computed, and cached in the workdir, once the restore has passed.
  trainer = build(config, mesh)
  state = trainer.state

  # --- Restore ---------------------------------------------------------------------------------
  manager = checkpoint.create_manager(
      workdir, keep_last=config.train.keep_checkpoints, best_metric=config.train.best_metric,
      best_mode=config.train.best_mode)
  try:
    restored = checkpoint.restore(manager, abstract_state(state, trainer.state_shardings),
                                  train_iter)
  except BaseException:
    manager.close()
    raise
  if restored is not None:
    state, start_step = restored
    _log.info("resumed from %s at step %d", manager.directory, start_step)
  else:
    start_step = int(jax.device_get(state["step"]))
  checkpoint.write_config(workdir, config.to_dict())
  writer = writers.create_writer(workdir, config.train.steps)
  class_weights = _class_weights(config, workdir, train_source)
  if class_weights is not None:  # before the first step compiles
    trainer.setup = dataclasses.replace(trainer.setup, class_weights=class_weights)
  setup = trainer.setup
  writer.write_text("config", str(config))
  writer.write_parameter_overview(state["gen"]["params"], state.get("disc", {}).get("params"))

  evaluator = create_evaluator(config, setup.generator, mesh, eval_source, fid_variables)

  # --- Loop ------------------------------------------------------------------------------------
  last_metrics: dict[str, float] = {}
  pending = None  # a log step's metrics, read once the next step is dispatched
  accumulate = make_accumulate(setup)
  averages = None  # the loss terms of the steps since the last log, on the devices
  timer = writers.StepTimer(config.train.batch_size, start_step, **_flops_and_peak(config))
  preemption = _PreemptionFlag()
  try:
    for step in range(start_step + 1, config.train.steps + 1):
      batch = sharding.shard_batch(next(train_iter), mesh)
      step_fn = trainer.step(step - 1)
      if step == start_step + 1:  # room in the heap for later steps' allocation orders
        state, metrics = xla_cpu.run_then_pad_heap(functools.partial(step_fn, state, batch))
      else:
        state, metrics = step_fn(state, batch)
      averages = accumulate(averages, metrics, state["step"])
      if pending is not None:
        last_metrics.update(_log_train(writer, timer, *pending, train_iter))
        pending = None
      # Read once: a SIGTERM that arrives later in this iteration is handled at the next one
      # (reading it again at the end stopped without saving).
      preempted = preemption.requested
      is_last = step == config.train.steps or preempted
      do_eval = step % config.train.eval_every == 0 or step == config.train.steps
      do_save = step % config.train.checkpoint_every == 0 or is_last
      if do_eval or do_save:
        # Checked before anything is saved, so a NaN never reaches a checkpoint.
        metrics = with_param_norm(state["gen"]["params"], metrics)
        last_metrics.update(_log_train(writer, timer, step, metrics, averages, train_iter))
        averages = None
      elif _is_logged(setup, step):  # the schedule the step computes gradient norms for
        pending = (step, with_param_norm(state["gen"]["params"], metrics), averages)
        averages = None
      eval_metrics = _evaluate(evaluator, state, step, writer) if do_eval else None
      if eval_metrics:
        last_metrics.update(eval_metrics)
      if do_save:
        checkpoint.save(manager, step, state, train_iter,
                        metrics=_ranked_metrics(config.train.best_metric, eval_metrics, step))
      if do_eval or do_save:
        timer.pause()
      if preempted:
        _log.warning("SIGTERM: saved step %d; stopping (rerun to resume)", step)
        break
  finally:
    preemption.restore()
    _log.info("input: %s", train_iter.stats.summary())
    manager.wait_until_finished()
    manager.close()
    writer.close()
  return last_metrics


class _PreemptionFlag:
  """Turns SIGTERM (preemption) into 'save a checkpoint at the end of this step and stop'.

  Only in a single-process run on the main thread: with several processes, all would have to
  agree on the step, and the scheduler's SIGKILL after the grace period is covered by the
  periodic checkpoints anyway.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    self.requested = True

  def restore(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _flops_and_peak(config: ml_collections.ConfigDict) -> dict[str, float | None]:
  """Model FLOPs of a train step and the devices' peak FLOP/s, for the log's MFU."""
  return {"flops_per_step": model_flops_per_step(config)["step"],
          "peak_flops_per_s": flops.peak_flops(str(config.model.dtype)).flops_per_s}


def model_flops_per_step(config: ml_collections.ConfigDict, adversarial: bool | None = None
                         ) -> dict[str, float]:
  """`flops.train_step_flops` of `config`'s models at its global batch and crop size.

  `adversarial` (default: `config.disc.enabled`) False counts a pretraining step of G alone.
  """
  if adversarial is None:
    adversarial = bool(config.disc.enabled)
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  model_cfg.conv_impl, model_cfg.remat = "xla", False  # a count independent of the lowering
  size = config.data.crop_size
  generator = models.create_generator(model_cfg, size)
  discriminator = models.create_discriminator(config.disc, model_cfg) if adversarial else None
  return flops.train_step_flops(generator, discriminator, config.train.batch_size, size)


def _log_train(writer, timer, step: int, metrics, averages, train_iter) -> dict[str, float]:
  """Logs step `step`: the loss terms averaged since the last log (`averages`), the step's own
  gradient norms and parameter norm; stops at a NaN/Inf in any averaged step."""
  host = {k: float(v) for k, v in jax.device_get(metrics).items()
          if not (k in _STEP_NORMS and float(v) == NOT_COMPUTED)}  # a log on SIGTERM
  means, first_nonfinite = _read_averages(averages)
  host.update(means)
  if first_nonfinite:
    bad, value, at, last = "train/loss", "non-finite", first_nonfinite, first_nonfinite - 1
  elif not math.isfinite(host["train/param_norm"]):
    # The timer last measured the previous logged step, whose parameters passed this check.
    bad, value, at, last = "train/param_norm", host["train/param_norm"], step, timer.last_step
  else:
    bad = None
  if bad:
    last_finite = f"last finite at step {last}" if last > 0 else "no step before it"
    raise NonFiniteLossError(
        f"{bad} is {value} at step {at} ({last_finite}); stopping. The last good checkpoint "
        "is kept in the workdir: lower optimizer.lr or enable optimizer.grad_clip_norm.")
  host.update(timer.measure(step))
  stats = train_iter.stats
  host.update({"data/images": stats.images, "data/skipped": stats.skipped,
               "data/dropped_gray": stats.dropped_gray})

  writer.write_scalars(step, host)
  return host
