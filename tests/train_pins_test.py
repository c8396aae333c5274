"""Pins of colorjax.train's numerics against closed forms: learning-rate schedules, gradient
clipping, the EMA of the generator, bf16 against float32, and the U-Net's multiscale inputs.
They hold the behaviour fixed while the code around them moves."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image

from colorjax import config as config_lib, sharding, train
from colorjax.models import unet
from train_test import _fixed_batch


def _opt(**overrides) -> ml_collections.ConfigDict:
  opt = config_lib.base_config().optimizer
  opt.frozen = ()
  opt.update(overrides)
  return opt


def test_step_schedule_multiplies_the_rate_at_each_boundary():
  schedule = train.create_schedule(_opt(schedule="step", boundaries=(10, 20), scales=(0.5, 0.1)),
                                   2.0, 100)
  expected = {0: 2.0, 9: 2.0, 10: 1.0, 19: 1.0, 20: 0.2, 99: 0.2}
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, rel=1e-6), step


def test_linear_decay_is_constant_then_reaches_zero_at_the_last_step():
  schedule = train.create_schedule(_opt(schedule="linear_decay", decay_start=60), 1.0, 100)
  for step, lr in {0: 1.0, 59: 1.0, 60: 1.0, 70: 0.75, 80: 0.5, 100: 0.0}.items():
    assert float(schedule(step)) == pytest.approx(lr, abs=1e-6), step
  assert float(train.create_schedule(_opt(schedule="constant"), 3e-4, 10)(7)) == \
      pytest.approx(3e-4)


def _first_moment(tx, grads, params):
  state = tx.init(params)
  _, state = tx.update(grads, state, params)
  (mu,) = [s.mu for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "mu"))
           if hasattr(s, "mu")]
  return mu


def test_gradient_clipping_scales_the_global_norm_down_to_the_limit():
  params = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
  grads = {"a": jnp.array([3.0, 0.0, 4.0]), "b": jnp.full((2, 2), 6.0)}  # global norm 13
  b1 = 0.9
  kwargs = dict(lr=1.0, b1=b1, b2=0.99, weight_decay=0.0)
  clipped = _first_moment(train.create_optimizer(_opt(grad_clip_norm=1.3), 10, **kwargs),
                          grads, params)
  for k in grads:  # Adam's first moment after one step is (1 - b1) x the (clipped) gradient
    np.testing.assert_allclose(clipped[k], (1 - b1) * grads[k] / 10.0, rtol=1e-6)
  unclipped = _first_moment(train.create_optimizer(_opt(grad_clip_norm=100.0), 10, **kwargs),
                            grads, params)
  np.testing.assert_allclose(unclipped["b"], (1 - b1) * grads["b"], rtol=1e-6)


def test_coupled_weight_decay_adds_the_scaled_parameters_to_the_gradient():
  params = {"w": jnp.array([2.0, -4.0])}
  grads = {"w": jnp.array([1.0, 1.0])}
  mu = _first_moment(train.create_optimizer(_opt(), 10, lr=1.0, b1=0.9, b2=0.99,
                                            weight_decay=0.5), grads, params)
  np.testing.assert_allclose(mu["w"], 0.1 * (grads["w"] + 0.5 * params["w"]), rtol=1e-6)


def _steps(config, batch, steps):
  mesh = sharding.create_mesh(1)
  trainer = train.build(config, mesh, np.linspace(0.5, 2.0, 313).astype(np.float32))
  state, step = trainer.state, trainer.step_fn(adversarial=False)
  states, losses = [jax.device_get(state)], []
  for _ in range(steps):
    state, metrics = step(state, sharding.shard_batch(batch, mesh))
    states.append(jax.device_get(state))
    losses.append(float(metrics["train/loss"]))
  return states, losses


def test_ema_of_the_generator_follows_its_closed_form(tiny_config, photos_dir):
  decay = 0.75
  tiny_config.optimizer.ema_decay = decay
  states, _ = _steps(tiny_config, _fixed_batch(photos_dir), 2)
  ema = states[0]["gen"]["params"]  # the EMA starts at the initial parameters
  for state in states[1:]:
    ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, state["gen"]["params"])
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
                 state["gen"]["ema_params"], ema)


def test_bfloat16_losses_follow_float32_ones(tiny_config, photos_dir):
  # bf16 keeps 8 bits of mantissa: each activation is off by up to ~0.4%; over three steps of
  # this tiny network the soft-encoded cross-entropy (about 5.7) moves by well under 2%.
  batch = _fixed_batch(photos_dir)
  _, f32 = _steps(tiny_config, batch, 3)
  tiny_config.model.dtype = "bfloat16"
  states, bf16 = _steps(tiny_config, batch, 3)
  np.testing.assert_allclose(bf16, f32, rtol=0.02)
  assert bf16 != f32  # the compute dtype did change
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(states[-1]["gen"]["params"]))


def test_multiscale_inputs_are_l_at_double_and_half_scale(photos_dir):
  size = 32
  gray = Image.open(sorted(photos_dir.glob("*.jpg"))[0]).convert("L").resize((size, size))
  l_hw = np.asarray(gray, np.float32) / 127.5 - 1.0
  model = unet.UNetGenerator(ngf=4, num_downs=5, multiscale_inputs=True, use_dropout=False)
  x = jnp.asarray(l_hw)[None, :, :, None]
  variables = model.init(jax.random.key(0), x, train=False)
  seen = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__" and context.module.name in ("down_0", "down_1"):
      seen[context.module.name] = (args, kwargs)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    model.apply(variables, x, train=False)
  level0 = np.asarray(seen["down_0"][0][0])[0]  # (H, W, 1 + 4)
  half = np.asarray(seen["down_1"][1]["extra_BhwE"])[0, :, :, 0]

  # Independent references: PIL's bilinear resampling (a triangle filter, antialiased when
  # reducing), on the float image.
  pil = Image.fromarray(l_hw, mode="F")
  double_ref = np.asarray(pil.resize((2 * size, 2 * size), Image.BILINEAR))
  half_ref = np.asarray(pil.resize((size // 2, size // 2), Image.BILINEAR))
  np.testing.assert_allclose(level0[:, :, 0], l_hw, atol=1e-6)
  for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):  # (row, column) offsets
    np.testing.assert_allclose(level0[:, :, 1 + k], double_ref[dy::2, dx::2], atol=1e-4)
  np.testing.assert_allclose(half, half_ref, atol=1e-4)
