"""Tests of colorjax.train: the step, device-count independence, resume, NaN stop, bad input."""
import dataclasses
import itertools
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import conftest
from colorjax import checkpoint, color, config as config_lib, data, prior, sharding, train
from colorjax import workdir as workdir_lib


def _fixed_batch(photos_dir, n=8, size=32):
  rgbs = []
  for path in sorted(photos_dir.iterdir())[:n]:
    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    rgbs.append(np.asarray(img))
  return {"rgb": np.stack(rgbs)}


def _run_steps(config, batch, num_devices, steps):
  mesh = sharding.create_mesh(num_devices)
  trainer = train.build(config, mesh, np.linspace(0.5, 2.0, 313).astype(np.float32))
  state, step = trainer.state, trainer.step_fn(adversarial=False)
  losses, grad_norms = [], []
  for _ in range(steps):
    state, metrics = step(state, sharding.shard_batch(batch, mesh))
    losses.append(float(metrics["train/loss"]))
    grad_norms.append(float(metrics["train/grad_norm"]))
  return losses, jax.device_get(state), grad_norms


def test_loss_goes_down_on_bundled_photos(tiny_config, photos_dir):
  # Ten steps: after six the fall (~0.1) was within rounding of the threshold, so a change of
  # XLA's kernels alone moved the test across it.
  losses, state, _ = _run_steps(tiny_config, _fixed_batch(photos_dir), 8, 10)
  assert all(b < a for a, b in zip(losses, losses[1:])), losses
  assert losses[-1] < losses[0] - 0.15, losses
  assert int(state["step"]) == 10


def test_one_and_eight_devices_agree(tiny_config, photos_dir):
  # A small learning rate keeps Adam's sign-like first updates of near-zero gradients (whose
  # sign float rounding may flip) from growing into large differences in this tiny network.
  tiny_config.optimizer.lr = 1e-5
  batch = _fixed_batch(photos_dir)
  losses1, state1, grads1 = _run_steps(tiny_config, batch, 1, 3)
  losses8, state8, grads8 = _run_steps(tiny_config, batch, 8, 3)
  np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
  np.testing.assert_allclose(grads1, grads8, rtol=1e-4)
  # Adam's first steps move each parameter by about lr * sign(gradient): where a gradient is
  # ~0, float rounding in the (differently ordered) reductions can flip that sign. So nearly
  # all parameters must agree to 1e-5, and none may differ by more than two such steps.
  lr_steps = tiny_config.optimizer.lr * 3
  diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(
      jax.tree.leaves(state1["gen"]["params"]), jax.tree.leaves(state8["gen"]["params"]))])
  assert diff.max() <= 2 * lr_steps, diff.max()
  assert np.mean(diff > 1e-7) < 0.01, np.mean(diff > 1e-7)
  # BatchNorm statistics are over the global batch, not per device.
  for a, b in zip(jax.tree.leaves(state1["gen"]["batch_stats"]),
                  jax.tree.leaves(state8["gen"]["batch_stats"])):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_frozen_decode_layer_is_not_trained(tiny_config, photos_dir):
  # The one-device step of test_one_and_eight_devices_agree (compiled once for both): Adam moves
  # a trained parameter by ~lr a step, 1e-5 here, which the 1e-6 tolerance below would catch.
  tiny_config.optimizer.lr = 1e-5
  _, state, _ = _run_steps(tiny_config, _fixed_batch(photos_dir), 1, 2)
  from colorjax import color  # pylint: disable=g-import-not-at-top
  kernel = state["gen"]["params"]["model_out"]["kernel"]
  np.testing.assert_allclose(kernel.reshape(313, 2), color.AB_BINS / 110, rtol=1e-6)


def _losses(workdir):
  rows = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_resume_gives_the_same_losses_and_restores_onto_one_device(tiny_config, tmp_path):
  c = tiny_config
  c.train.steps = 6
  c.train.checkpoint_every = 3
  straight = tmp_path / "straight"
  train.train_and_evaluate(c, str(straight))

  resumed = tmp_path / "resumed"
  c_first = config_lib.apply_overrides(c.copy_and_resolve_references(), {})
  c_first.train.steps = 3
  train.train_and_evaluate(c_first, str(resumed))
  assert checkpoint.read_config(resumed)["train"]["steps"] == 3
  train.train_and_evaluate(c, str(resumed))
  a, b = _losses(straight), _losses(resumed)
  assert sorted(a) == sorted(b) == list(range(1, 7))
  for s in a:
    assert a[s] == pytest.approx(b[s], rel=1e-5), (s, a[s], b[s])
  assert (straight / "samples").is_dir() and any((straight / "samples").iterdir())
  assert any((straight / "tensorboard").iterdir())

  # An 8-device checkpoint restores onto a 1-device mesh.
  mesh1 = sharding.create_mesh(1)
  setup = train.create_setup(c, None)
  state = jax.eval_shape(lambda: train.create_state(setup, c, mesh1)[0])
  shardings = jax.tree.map(lambda _: sharding.replicated(mesh1), state)
  manager = checkpoint.create_manager(straight)
  restored, step = checkpoint.restore(manager, train.abstract_state(state, shardings))
  manager.close()
  assert step == 6 and int(restored["step"]) == 6
  leaf = jax.tree.leaves(restored["gen"]["params"])[0]
  assert len(leaf.sharding.device_set) == 1
  _, variables = checkpoint.load_model(straight)
  np.testing.assert_array_equal(variables["params"]["model_out"]["kernel"],
                                jax.device_get(restored["gen"]["params"]["model_out"]["kernel"]))


def test_corrupt_image_is_skipped_and_counted(tiny_config, photos_dir, tmp_path):
  folder = tmp_path / "photos"
  folder.mkdir()
  for path in sorted(photos_dir.iterdir())[:6]:
    shutil.copy(path, folder / path.name)
  (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
  c = tiny_config
  c.data.train = str(folder)
  c.data.eval_fraction = 0.0
  c.train.steps = 2
  c.train.checkpoint_every = 2
  train.train_and_evaluate(c, str(tmp_path / "wd"))
  rows = [json.loads(l) for l in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  assert max(r.get("data/skipped", 0) for r in rows) >= 1


def test_log_schedule_is_the_smallest_with_the_same_logged_steps():
  assert train.log_schedule((1, 1000, 2), 4) == ((1,), 0)
  assert train.log_schedule((2, 1000, 3), 7) == ((2, 3), 7)
  assert train.log_schedule((5, 1000, 1000), 6) == ((5,), 6)
  assert train.log_schedule((3, 1000, 1000), 6) == ((3, 1000), 0)
  naive = lambda every, last, step: step == last or any(step % e == 0 for e in every)
  for every, last in (((2, 1000, 3), 7), ((4, 6, 8), 12), ((1, 5, 5), 9), ((3, 9, 10), 10)):
    setup = dataclasses.replace(train.create_setup(config_lib.load_config("eccv16:tiny"), None),
                                **dict(zip(("logged_every", "last_step"),
                                           train.log_schedule(every, last))))
    assert [train._is_logged(setup, s) for s in range(1, last + 1)] == [  # pylint: disable=protected-access
        naive(every, last, s) for s in range(1, last + 1)], (every, last)


def test_gradient_norm_is_computed_at_logged_steps_only(tiny_config, photos_dir):
  c = tiny_config
  c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 7, 2, 1000, 3
  mesh = sharding.create_mesh(1)
  setup = train.create_setup(c, None)
  every_step = dataclasses.replace(setup, logged_every=(1,))
  state, shardings = train.create_state(setup, c, mesh)
  batch = sharding.shard_batch(_fixed_batch(photos_dir), mesh)
  step = train.make_train_step(setup, shardings, mesh, adversarial=False)
  reference = train.make_train_step(every_step, shardings, mesh, adversarial=False)
  norms, reference_norms = [], []
  for _ in range(c.train.steps):
    reference_norms.append(float(reference(jax.tree.map(jnp.copy, state), batch)[1][
        "train/grad_norm"]))
    state, metrics = step(state, batch)
    norms.append(float(metrics["train/grad_norm"]))
  logged = [1 + i for i, n in enumerate(norms) if n != train.NOT_COMPUTED]
  assert logged == [2, 3, 4, 6, 7], norms  # multiples of 2 or 3, and the last step
  assert all(n > 0 for n in reference_norms)
  np.testing.assert_allclose([norms[s - 1] for s in logged],
                             [reference_norms[s - 1] for s in logged], rtol=1e-6)


def test_remat_lowers_the_train_step_memory(tiny_config):
  """make_train_step jits with xla_cpu.step_compiler_options: without them XLA:CPU merges the
  rematerialised forward pass back into the original one and remat saves nothing."""
  def temp_bytes(remat):
    c = tiny_config.copy_and_resolve_references()
    c.model.remat = remat
    mesh = sharding.create_mesh(1)
    setup = train.create_setup(c, None)
    state = jax.eval_shape(lambda: train.create_state(setup, c, mesh)[0])
    shardings = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    batch = {"rgb": jax.ShapeDtypeStruct((8, 32, 32, 3), jnp.uint8,
                                         sharding=sharding.batch_sharded(mesh))}
    step = train.make_train_step(setup, shardings, mesh, adversarial=False)
    return step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes

  assert temp_bytes(True) < 0.9 * temp_bytes(False)  # 0.81 at 32 px; 1.0 without the options


def _logged_every_3_config():
  c = config_lib.load_config(str(conftest.REPO_ROOT / "configs" / "eccv16.py") + ":tiny")
  c.train.steps, c.train.log_every, c.train.eval_every, c.train.checkpoint_every = 6, 3, 1000, 1000
  return c


@pytest.fixture(scope="module")
def logged_every_3_run(tmp_path_factory):
  """(config, workdir) of a tiny run of 6 steps logged every 3 and saved at the end only; step 3's
  log is read while step 4 runs, step 6's is the last step's (saved with it)."""
  c = _logged_every_3_config()
  workdir = tmp_path_factory.mktemp("logged_every_3")
  train.train_and_evaluate(c, str(workdir))
  return _logged_every_3_config(), workdir


def test_param_norm_is_logged_at_log_steps(logged_every_3_run):
  """train/param_norm is computed outside the step, from the state it returned (at step 3 while
  step 4 runs on the donated state); at the last step it is the saved parameters' norm."""
  _, workdir = logged_every_3_run
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  norms = {r["step"]: r["train/param_norm"] for r in rows if "train/param_norm" in r}
  assert sorted(norms) == [3, 6], norms
  assert len(set(norms.values())) == 2 and all(np.isfinite(v) and v > 0 for v in norms.values())
  _, variables = checkpoint.load_model(workdir, 6)
  want = np.sqrt(sum(np.sum(np.square(x, dtype=np.float64))
                     for x in jax.tree.leaves(variables["params"])))
  np.testing.assert_allclose(norms[6], want, rtol=1e-5)


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_config, tmp_path):
  c = tiny_config
  # Two ordinary steps, then a learning rate of 1e30 from step 3 on.
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = "step"
  c.optimizer.boundaries = (2,)
  c.optimizer.scales = (1e33,)
  c.train.steps = 6
  c.train.checkpoint_every = 1
  with pytest.raises(train.NonFiniteLossError,
                     match=r"is \S+ at step 3 \(.*last finite at step 2\)"):
    train.train_and_evaluate(c, str(tmp_path))
  manager = checkpoint.create_manager(tmp_path)
  steps = manager.all_steps()
  manager.close()
  assert steps == [1, 2]
  # Every kept checkpoint has finite parameters.
  for s in steps:
    _, variables = checkpoint.load_model(tmp_path, s)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def _train_rows(workdir):
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r for r in rows if "train/loss" in r}


def _steps_one_at_a_time(c, workdir):
  """Yields the metrics of each step of the run of config `c` in `workdir`, stepped anew one at a
  time on the same batches, prior and mesh."""
  weights = color.rebalance_weights(prior.load_prior(pathlib.Path(workdir) /
                                                     workdir_lib.PRIOR_FILE),
                                    c.loss.rebalance_lambda)
  mesh = sharding.create_mesh()
  trainer = train.build(c, mesh, np.asarray(weights))
  state, step_fn = trainer.state, trainer.step_fn(adversarial=False)
  batches = train.train_iterator_from_config(c, train.create_sources(c.data)[0])
  while True:
    state, metrics = step_fn(state, sharding.shard_batch(next(batches), mesh))
    yield {k: float(v) for k, v in jax.device_get(metrics).items()}


def test_logged_losses_are_the_means_of_the_steps_since_the_last_log(logged_every_3_run):
  c, workdir = logged_every_3_run
  logged = _train_rows(workdir)
  per_step = list(itertools.islice(_steps_one_at_a_time(c, workdir), c.train.steps))
  assert sorted(logged) == [3, 6]
  for step in (3, 6):
    for key in ("train/loss", "train/rec_loss"):
      want = np.mean([m[key] for m in per_step[step - 3:step]])
      assert logged[step][key] == pytest.approx(want, rel=1e-5), (step, key)
    # Norms are the logged step's own.
    assert logged[step]["train/grad_norm"] == pytest.approx(per_step[step - 1]["train/grad_norm"],
                                                            rel=1e-5)
  assert logged[6]["train/loss"] != pytest.approx(per_step[5]["train/loss"], rel=1e-3)


def test_nan_between_logs_stops_naming_its_step(tiny_config, tmp_path):
  c = tiny_config
  c.optimizer.lr = 1e30
  c.optimizer.schedule = "constant"
  c.train.steps, c.train.log_every, c.train.checkpoint_every = 6, 5, 1000
  with pytest.raises(train.NonFiniteLossError) as raised:
    train.train_and_evaluate(c, str(tmp_path))
  # The first non-finite loss of the same steps taken one at a time.
  losses = []
  for metrics in itertools.islice(_steps_one_at_a_time(c, tmp_path), c.train.log_every):
    losses.append(metrics["train/loss"])
    if not np.isfinite(losses[-1]):
      break
  first_bad = len(losses)
  assert not np.isfinite(losses[-1]) and 1 < first_bad < c.train.log_every, losses
  assert raised.match(rf"at step {first_bad} \(last finite at step {first_bad - 1}\)")


def test_bad_config_key_names_the_key():
  c = config_lib.load_config("eccv16:tiny")
  with pytest.raises(ValueError, match="optimizer.lrr"):
    config_lib.apply_overrides(c, {"optimizer.lrr": "1"})
  with pytest.raises(ValueError, match="train.batch_size"):
    config_lib.apply_overrides(c, {"train.batch_size": "0"})
  with pytest.raises(ValueError, match="loss.kind"):
    config_lib.apply_overrides(c, {"loss.kind": "'l3'"})
  with pytest.raises(ValueError, match="model.width"):
    config_lib.apply_overrides(c, {"model.width": "'wide'"})


def test_batch_not_divisible_by_devices_fails_clearly(tiny_config, tmp_path):
  c = tiny_config
  c.train.batch_size = 6
  with pytest.raises(ValueError, match="train.batch_size=6"):
    train.train_and_evaluate(c, str(tmp_path))


def test_sigterm_saves_and_a_rerun_resumes(tmp_path):
  """`colorjax train` in this process, sent SIGTERM from outside the loop (a watcher thread) once
  two steps are logged: it saves, returns 0 and puts the previous handler back; a rerun resumes."""
  import os, signal, threading, time  # pylint: disable=g-import-not-at-top,multiple-imports
  from colorjax import cli  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "wd"
  args = ["--no-compile-cache", "train", "--config", "eccv16:tiny", "--workdir", str(workdir),
          "--config.train.eval_every=1000"]
  metrics = workdir / "metrics.jsonl"
  done = threading.Event()

  def terminate_after_two_logs():
    deadline = time.time() + 240
    while not done.is_set() and time.time() < deadline:
      if metrics.exists() and metrics.read_text().count("\n") >= 2:
        os.kill(os.getpid(), signal.SIGTERM)
        return
      time.sleep(0.05)

  # A SIGTERM that the training loop does not handle lands here, not in pytest's default.
  stray = []
  stray_handler = lambda signum, frame: stray.append(signum)
  previous = signal.signal(signal.SIGTERM, stray_handler)
  watcher = threading.Thread(target=terminate_after_two_logs, daemon=True)
  try:
    watcher.start()
    try:
      assert cli.main(args + ["--config.train.steps=400",
                              "--config.train.checkpoint_every=1000"]) == 0
    finally:
      done.set()
      watcher.join()
    assert signal.getsignal(signal.SIGTERM) is stray_handler
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert not stray
  manager = checkpoint.create_manager(workdir)
  saved = manager.latest_step()
  manager.close()
  assert saved is not None and 2 <= saved < 400
  assert cli.main(args + [f"--config.train.steps={saved + 2}"]) == 0
  steps = [json.loads(l)["step"] for l in metrics.read_text().splitlines()
           if "train/loss" in json.loads(l)]
  assert steps[-1] == saved + 2 and sorted(set(steps)) == steps


def test_mixed_precision_keeps_float32_params(tiny_config, photos_dir):
  config_lib.apply_overrides(tiny_config, {"model.dtype": "bfloat16"})
  losses, state, _ = _run_steps(tiny_config, _fixed_batch(photos_dir), 8, 2)
  assert all(np.isfinite(losses))
  assert {x.dtype for x in jax.tree.leaves(state["gen"]["params"])} == {np.dtype("float32")}


def test_data_vflip_from_the_config_flips_training_crops_vertically(tiny_config, tmp_path):
  """An image red above, blue below: with only `data.vflip` on, some crops come upside down."""
  rgb = np.zeros((32, 32, 3), np.uint8)
  rgb[:16] = (220, 30, 30)
  rgb[16:] = (30, 30, 220)
  for i in range(4):
    Image.fromarray(rgb).save(tmp_path / f"{i}.png")
  c = tiny_config
  c.data.train, c.data.resize_size, c.data.min_chroma = str(tmp_path), 32, 0.0
  config_lib.apply_overrides(c, {"data.flip": "false", "data.vflip": "true"})
  batch = next(train.train_iterator_from_config(c, data.image_source(str(tmp_path))))["rgb"]
  red_on_top = batch[:, :16, :, 0].mean(axis=(1, 2)) > batch[:, 16:, :, 0].mean(axis=(1, 2))
  assert 0 < red_on_top.sum() < len(batch), red_on_top
  config_lib.apply_overrides(c, {"data.vflip": "false"})
  batch = next(train.train_iterator_from_config(c, data.image_source(str(tmp_path))))["rgb"]
  np.testing.assert_array_equal(batch, np.broadcast_to(rgb, batch.shape))


def test_rmsprop_is_keras_rmsprop_in_closed_form(tiny_config):
  # Keras' RMSprop (rho, epsilon; no momentum, not centred): ms <- rho ms + (1 - rho) g^2 from
  # ms = 0, w <- w - lr g / sqrt(ms + eps); coupled L2 decay adds wd * w to g first.
  opt = tiny_config.optimizer
  opt.update(name="rmsprop", rms_decay=0.8, rms_eps=1e-3, schedule="constant", frozen=())
  lr, wd = 0.01, 0.1
  tx = train.create_optimizer(opt, 10, lr=lr, b1=0.9, b2=0.999, weight_decay=wd,
                              name="rmsprop")
  rng = np.random.default_rng(0)
  w = rng.normal(size=(5,)).astype(np.float32)
  params, state = {"w": jnp.asarray(w)}, tx.init({"w": jnp.asarray(w)})
  ms = np.zeros(5, np.float64)
  w_ref = w.astype(np.float64)
  for _ in range(3):
    g = rng.normal(size=(5,))
    updates, state = tx.update({"w": jnp.asarray(g, jnp.float32)}, state, params)
    params = {"w": params["w"] + updates["w"]}
    g_total = g + wd * w_ref
    ms = 0.8 * ms + 0.2 * g_total**2
    w_ref = w_ref - lr * g_total / np.sqrt(ms + 1e-3)
  np.testing.assert_allclose(np.asarray(params["w"]), w_ref, rtol=1e-5, atol=1e-6)
  # Adam from the same start moves the parameters differently: the choice is honoured.
  adam = train.create_optimizer(opt, 10, lr=lr, b1=0.9, b2=0.999, weight_decay=wd)
  g = {"w": jnp.ones(5)}
  rms_step, _ = tx.update(g, tx.init(g), g)
  adam_step, _ = adam.update(g, adam.init(g), g)
  assert not np.allclose(rms_step["w"], adam_step["w"])


# ----------------------------------------------------------------------------------------------
# FID during training (report 004)
# ----------------------------------------------------------------------------------------------


def test_fid_during_training_is_logged_and_picks_the_best_checkpoint(tiny_config, tmp_path,
                                                                     monkeypatch, caplog,
                                                                     inception_pth):
  from colorjax import colorization, fid, inference  # pylint: disable=g-import-not-at-top
  from colorjax.models import inception  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  shutil.copy(inception_pth, "inception.pth")
  n = 2  # FID's minimum: each image is three InceptionV3 inputs (truth, model, gray)
  c = config_lib.apply_overrides(tiny_config, {
      "eval.fid_weights": "inception.pth", "eval.fid_batch_size": "3",
      "data.eval_images": str(n), "train.eval_every": "2", "train.checkpoint_every": "2",
      "train.keep_checkpoints": "1", "train.samples": "0",
      "train.best_metric": "eval/model/fid", "train.best_mode": "min"})
  loads = []
  load_inception = inception.load_inception
  monkeypatch.setattr(inception, "load_inception",
                      lambda path: loads.append(path) or load_inception(path))
  with caplog.at_level("INFO", logger="colorjax"):
    train.train_and_evaluate(c, "workdir")
  assert loads == [str(tmp_path / "inception.pth")]  # once per run, not per eval

  rows = {r["step"]: r for r in map(json.loads, pathlib.Path("workdir/metrics.jsonl").open())
          if "eval/model/fid" in r}
  assert sorted(rows) == [2, 4]
  for row in rows.values():
    assert np.isfinite(row["eval/model/fid"]) and row["eval/model/fid"] > 0
    assert np.isfinite(row["eval/gray/fid"]) and row["eval/gray/fid"] > 0
  assert rows[2]["eval/model/fid"] != rows[4]["eval/model/fid"]
  assert rows[2]["eval/gray/fid"] == pytest.approx(rows[4]["eval/gray/fid"], rel=1e-6)
  logged = {(step, tag) for step, tag, _ in conftest.tensorboard_values("workdir/tensorboard")}
  assert {(s, k) for s in (2, 4) for k in ("eval/model/fid", "eval/gray/fid")} <= logged
  console = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step 4/4")]
  assert any("eval/model/fid=" in m and "eval/gray/fid=" in m for m in console), console

  # The lower FID is kept as the best checkpoint beside the latest one (keep_checkpoints=1).
  best = min(rows, key=lambda s: rows[s]["eval/model/fid"])
  kept = sorted(int(p.name) for p in pathlib.Path("workdir/checkpoints").iterdir()
                if p.name.isdigit())
  assert kept == sorted({4, best})

  # The logged FID is fid.py's on the same images: the first n of the eval split colorized
  # by the step-4 model through `colorjax colorize`'s path.
  _, eval_source = train.create_sources(c.data)
  batch = next(data.create_eval_batches(eval_source, image_size=c.data.eval_size, batch_size=8))
  truths = [rgb for rgb, ok in zip(batch["rgb"], batch["mask"]) if ok][:n]
  colorizer = inference.Colorizer(*checkpoint.load_model("workdir", step=4))
  colorized = [colorization.colorize(rgb, colorizer) for rgb in truths]
  features = fid.pool3_features(inception.load_inception("inception.pth"), truths + colorized,
                                 batch_size=3)  # calls of the shape the eval compiled
  assert rows[4]["eval/model/fid"] == pytest.approx(
      fid.fid_from_features(features[:n], features[n:]), rel=1e-3)


def test_missing_fid_weights_fail_in_one_line_before_training(tmp_path, monkeypatch, capsys):
  from colorjax import cli  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  assert cli.main(["--no-compile-cache", "train", "--config", "eccv16:tiny", "--workdir", "run",
                   "--config.eval.fid_weights=weights/inception.pth"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("colorjax train: error: config key eval.fid_weights: ")
  assert err.count("\n") == 1
  assert str(tmp_path / "weights" / "inception.pth") in err
  assert not pathlib.Path("run/checkpoints").exists()
  assert not pathlib.Path("run/metrics.jsonl").exists()


def test_an_eval_too_small_for_fid_trains_on_without_a_best_checkpoint(tiny_config, photos_dir,
                                                                       tmp_path, monkeypatch,
                                                                       caplog, inception_pth):
  monkeypatch.chdir(tmp_path)
  pathlib.Path("eval").mkdir()
  shutil.copy(photos_dir / "coffee.jpg", "eval/coffee.jpg")
  pathlib.Path("eval/broken.jpg").write_bytes(b"not a photo")
  shutil.copy(inception_pth, "inception.pth")
  c = config_lib.apply_overrides(tiny_config, {
      "data.eval": "eval", "eval.fid_weights": "inception.pth", "train.steps": "2",
      "train.eval_every": "2", "train.best_metric": "eval/model/fid", "train.best_mode": "min"})
  with caplog.at_level("WARNING", logger="colorjax"):
    last = train.train_and_evaluate(c, "workdir")
  assert last["eval/images"] == 1 and "eval/model/fid" not in last
  messages = [r.getMessage() for r in caplog.records]
  assert any("FID needs at least 2 images, only 1 was readable" in m for m in messages)
  assert any("step 2: this eval has no eval/model/fid" in m for m in messages)
  assert sorted(p.name for p in pathlib.Path("workdir/checkpoints").iterdir()
                if p.name.isdigit()) == ["2"]
