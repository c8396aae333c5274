"""Tests of launch/: multi-process training for real on CPU with launch/local_multiprocess.sh
(2 processes x 4 host devices, joined by jax.distributed over 127.0.0.1), and what the cluster
launchers run, with srun / gcloud / nvidia-smi replaced by stand-ins that record their call.

The multi-process runs are checked against this test process (8 host devices) stepping the same
tiny model on the same global batches: process 0's rows then process 1's, as the data pipeline
gives them to a 2-process run.
"""
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import conftest
from colorjax import color, config as config_lib, data, prior, sharding, train

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
CONFIG = "eccv16:tiny"
FIRST_CHECKPOINT = 3  # the killed run's first checkpoint: steps 1-3 run uninterrupted
STEPS = 5             # the resumed run's last step
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 4
RUN_TIMEOUT_S = 400
# Launch variables a developer's shell might hold; each test states the ones it means.
LAUNCH_VARS = ("CONFIG", "WORKDIR", "TPU_NAME", "ZONE", "PROJECT", "PORT", "PLATFORM",
               "DEVICES_PER_PROCESS", "CPU_DEVICES", "REPO_DIR", "SETUP", "SHARED_WORKDIR",
               "GPU_XLA_FLAGS", "CUDA_VISIBLE_DEVICES", "JAX_LOCAL_DEVICE_IDS", "JAX_PLATFORMS")


def _clean_env(**extra) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}
  env.update(extra)
  return env


def _overrides(prior_file: pathlib.Path) -> dict[str, str]:
  """The tiny run: a checkpoint at FIRST_CHECKPOINT, eval only at the end on 2 images, a fixed
  prior. lr 1e-4 rather than the variant's 1e-3: at 1e-3 Adam turns the rounding noise of
  near-zero gradients (conv biases before BatchNorm) into full-size updates, and ANY two
  reduction orders (1 vs 8 devices in one process too) drift apart by ~1e-5 at step 3 and ~4e-4
  at step 6; at 1e-4 they agree to ~3e-7 over 6 steps, so rtol 1e-5 tests the runs, not Adam.
  XLA's own convolutions: on CPU their step compiles 2-3x faster than the default lowering's."""
  return {"train.checkpoint_every": str(FIRST_CHECKPOINT), "train.eval_every": "1000",
          "data.eval_images": "2", "loss.prior_file": str(prior_file), "optimizer.lr": "1e-4",
          "model.conv_impl": "xla"}


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory) -> pathlib.Path:
  """One prior for every run, so the reference and the launched runs weight classes alike."""
  config = config_lib.load_config(CONFIG)
  train_source, _ = train.create_sources(config.data)
  path = tmp_path_factory.mktemp("prior") / "prior.npy"
  np.save(path, prior.compute_prior(train_source, image_size=config.data.crop_size,
                                    progress=False))
  return path


def _same_global_batch_losses(prior_file: pathlib.Path, steps: int = STEPS) -> dict[int, float]:
  """{step: train/loss} of this process (8 devices) on the 2-process run's global batches."""
  config = config_lib.apply_overrides(config_lib.load_config(CONFIG), _overrides(prior_file))
  mesh = sharding.create_mesh()
  assert mesh.devices.size == NUM_PROCESSES * DEVICES_PER_PROCESS
  train_source, _ = train.create_sources(config.data)
  weights = color.rebalance_weights(prior.load_prior(prior_file), config.loss.rebalance_lambda)
  with conftest.users_codegen():  # as the launched runs compile (`_launch`)
    trainer = train.build(config, mesh, np.asarray(weights))
    state, step_fn = trainer.state, trainer.step_fn(adversarial=False)
  d = config.data
  # What train.train_iterator_from_config builds in process p of NUM_PROCESSES.
  iterators = [
      data.create_train_iterator(
          train_source, batch_size_per_process=config.train.batch_size // NUM_PROCESSES,
          crop_size=d.crop_size, seed=config.seed, process_index=p,
          process_count=NUM_PROCESSES, min_chroma=d.min_chroma,
          augment={"flip": d.flip, "vflip": d.vflip, "rotate_degrees": d.rotate_degrees,
                   "blur_sigma": d.blur_sigma, "cutout": d.cutout},
          num_threads=d.num_threads, num_workers=0, resize_size=d.resize_size or d.crop_size)
      for p in range(NUM_PROCESSES)]
  losses = {}
  for step in range(1, steps + 1):
    parts = [next(it) for it in iterators]
    batch = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    state, metrics = step_fn(state, sharding.shard_batch(batch, mesh))
    losses[step] = float(metrics["train/loss"])
  return losses


def _launch(workdir: pathlib.Path, prior_file: pathlib.Path, steps: int, log: pathlib.Path
            ) -> subprocess.Popen:
  """Starts launch/local_multiprocess.sh in its own process group (so it can be killed whole)."""
  args = ["bash", str(LAUNCH / "local_multiprocess.sh"), str(NUM_PROCESSES), f"CONFIG={CONFIG}",
          f"WORKDIR={workdir}", "PLATFORM=cpu", f"DEVICES_PER_PROCESS={DEVICES_PER_PROCESS}",
          f"PYTHON={sys.executable}", f"train.steps={steps}"]
  args += [f"{k}={v}" for k, v in _overrides(prior_file).items()]
  with open(log, "ab") as out:
    return subprocess.Popen(args, cwd=REPO, env=conftest.users_env(_clean_env()), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc: subprocess.Popen, log: pathlib.Path) -> int:
  try:
    return proc.wait(timeout=RUN_TIMEOUT_S)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail(f"the launched run did not finish in {RUN_TIMEOUT_S} s:\n{_tail(log)}")


def _tail(log: pathlib.Path, lines: int = 40) -> str:
  return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _train_rows(workdir: pathlib.Path) -> list[dict]:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [r for r in rows if "train/loss" in r]


def _kill_after_checkpoint(proc: subprocess.Popen, checkpoint_dir: pathlib.Path,
                           outcome: dict) -> None:
  """SIGKILLs `proc`'s process group as soon as `checkpoint_dir` exists (Orbax renames a step's
  directory into place once every process has written its part); records what happened."""
  deadline = time.monotonic() + RUN_TIMEOUT_S
  while not checkpoint_dir.is_dir():
    if proc.poll() is not None:
      outcome["error"] = f"the run ended (status {proc.returncode}) before its first checkpoint"
      return
    if time.monotonic() > deadline:
      outcome["error"] = f"no checkpoint after {RUN_TIMEOUT_S} s"
      break
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  outcome["status"] = proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prior_file) -> dict:
  """A 2-process run far longer than the test, killed (SIGKILL to its whole process group) as
  soon as its first checkpoint is complete, then restarted in the same workdir to STEPS; and the
  reference losses, computed here while the first run starts up.
  """
  workdir = tmp_path_factory.mktemp("killed_and_resumed")
  log = workdir.parent / (workdir.name + ".log")
  first = _launch(workdir, prior_file, 1000, log)
  outcome = {}
  watcher = threading.Thread(target=_kill_after_checkpoint, daemon=True,
                             args=(first, workdir / "checkpoints" / str(FIRST_CHECKPOINT), outcome))
  watcher.start()
  try:
    reference = _same_global_batch_losses(prior_file)
  finally:
    watcher.join(RUN_TIMEOUT_S + 10)
  if "error" in outcome:
    pytest.fail(f"{outcome['error']}:\n{_tail(log)}")
  rows_before = _train_rows(workdir)
  resumed_from = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  first_log = log.read_text(errors="replace")

  rc = _wait(_launch(workdir, prior_file, STEPS, log), log)
  assert rc == 0, _tail(log)
  return {"reference": reference, "before": rows_before,
          "after": _train_rows(workdir)[len(rows_before):], "resumed_from": resumed_from,
          "kill_status": outcome["status"], "first_log": first_log, "workdir": workdir}


def _assert_losses_match(rows: list[dict], reference: dict[int, float]) -> None:
  for row in rows:
    np.testing.assert_allclose(row["train/loss"], reference[row["step"]], rtol=1e-5,
                               err_msg=f"step {row['step']}")


def test_two_processes_give_the_losses_of_one_process_on_the_same_global_batch(runs):
  rows = runs["before"]
  steps = [r["step"] for r in rows]
  assert steps[:FIRST_CHECKPOINT] == list(range(1, FIRST_CHECKPOINT + 1)), steps
  _assert_losses_match(rows, runs["reference"])
  # Both processes ran every step (each logs its progress; only process 0 writes files).
  lines = runs["first_log"].splitlines()
  for i in range(NUM_PROCESSES):
    assert any(line.startswith(f"[{i}] ") and f"step {FIRST_CHECKPOINT}/" in line
               for line in lines), f"process {i}"


def test_killed_two_process_run_resumes_with_the_losses_of_an_uninterrupted_one(runs):
  assert runs["kill_status"] == -signal.SIGKILL
  resumed_from = runs["resumed_from"]
  assert FIRST_CHECKPOINT <= resumed_from < STEPS, resumed_from
  after = runs["after"]
  assert [r["step"] for r in after] == list(range(resumed_from + 1, STEPS + 1)), after
  # Steps run twice (after the checkpoint, before the kill) agree too.
  _assert_losses_match(runs["before"] + after, runs["reference"])
  assert STEPS in {int(p.name) for p in (runs["workdir"] / "checkpoints").iterdir()
                   if p.name.isdigit()}


def test_damaged_newest_checkpoint_resumes_from_the_previous_one(runs, prior_file):
  """After the kill test: a flipped bit in the newest checkpoint; the rerun reports it in one
  line, sets it aside and resumes both processes from the previous checkpoint, with the losses
  of the uninterrupted run."""
  workdir = runs["workdir"]
  checkpoints = workdir / "checkpoints"
  assert {FIRST_CHECKPOINT, STEPS} <= {int(p.name) for p in checkpoints.iterdir()
                                       if p.name.isdigit()}
  newest = checkpoints / str(STEPS)
  largest = conftest.flip_a_bit_of_the_largest_file(newest / "state", divisor=2, bit=0x01)
  content = largest.read_bytes()
  rows_before = _train_rows(workdir)
  log = workdir.parent / (workdir.name + "_damaged.log")

  rc = _wait(_launch(workdir, prior_file, STEPS, log), log)
  assert rc == 0, _tail(log)
  text = log.read_text(errors="replace")
  assert "Traceback" not in text, _tail(log)
  for i in range(NUM_PROCESSES):
    assert any(line.startswith(f"[{i}] ") and f"checkpoint step {STEPS} " in line
               and "is damaged" in line for line in text.splitlines()), f"process {i}"
  after = _train_rows(workdir)[len(rows_before):]
  assert [r["step"] for r in after] == list(range(FIRST_CHECKPOINT + 1, STEPS + 1)), after
  _assert_losses_match(after, runs["reference"])
  assert (checkpoints / f"{STEPS}.damaged" / largest.relative_to(newest)).read_bytes() == content
  assert (checkpoints / str(STEPS)).is_dir()


# Stands in for srun on one machine: starts SLURM_NTASKS copies of the command with the
# variables srun gives each task, so jax.distributed finds the job as it would under SLURM.
_FAKE_SRUN = """#!/usr/bin/env bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_STEP_NODELIST=localhost SLURM_STEP_NUM_NODES=1 "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""


@pytest.mark.slow
def test_slurm_sbatch_trains_with_jax_finding_the_job_in_slurm_variables(tmp_path, prior_file):
  (tmp_path / "bin").mkdir()
  (tmp_path / "bin" / "srun").write_text(_FAKE_SRUN)
  (tmp_path / "bin" / "srun").chmod(0o755)
  workdir = tmp_path / "run"
  env = _clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="4242",
                   SLURM_NTASKS=str(NUM_PROCESSES), SLURM_NTASKS_PER_NODE=str(NUM_PROCESSES),
                   SLURM_SUBMIT_DIR=str(REPO), PYTHON=sys.executable, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES_PER_PROCESS}")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)  # see launch/local_multiprocess.sh
  args = ["bash", str(LAUNCH / "slurm.sbatch"), CONFIG, str(workdir), "train.steps=2"]
  args += [f"{k}={v}" for k, v in _overrides(prior_file).items()]
  result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  rows = _train_rows(workdir)
  assert [r["step"] for r in rows] == [1, 2]
  _assert_losses_match(rows, _same_global_batch_losses(prior_file, steps=2))


# ------------------------------------------------------------------------------------------------
# The scripts' own logic, with stand-in programs (no training)
# ------------------------------------------------------------------------------------------------

# Records its arguments and environment as one JSON line in $RECORD, then behaves as
# $FAKE_BEHAVIOUR says for its JAX_PROCESS_ID; `-c CODE` (the launcher's free-port probe) runs
# the real interpreter.
_FAKE_PROGRAM = f"""#!{sys.executable}
import json, os, signal, sys, time
if sys.argv[1:2] == ["-c"]:
  os.execv({sys.executable!r}, [{sys.executable!r}] + sys.argv[1:])
with open(os.environ["RECORD"], "a") as f:
  f.write(json.dumps({{"argv": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
behaviour = json.loads(os.environ.get("FAKE_BEHAVIOUR", "{{}}"))
me = os.environ.get("JAX_PROCESS_ID", "0")
def on_term(signum, frame):
  with open(os.environ["RECORD"] + ".term", "a") as f:
    f.write(me + "\\n")
  sys.exit(143)
signal.signal(signal.SIGTERM, on_term)
action = behaviour.get(me, "exit 0").split()
if action[0] == "sleep":
  time.sleep(float(action[1]))
elif action[0] == "exit":
  time.sleep(float(action[2]) if len(action) > 2 else 0)
  sys.exit(int(action[1]))
"""


def _fake(tmp_path: pathlib.Path, name: str) -> pathlib.Path:
  path = tmp_path / "bin" / name
  path.parent.mkdir(exist_ok=True)
  path.write_text(_FAKE_PROGRAM)
  path.chmod(0o755)
  return path


def _records(record: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


@pytest.mark.parametrize("script,args,missing", [
    ("local_multiprocess.sh", ["2"], ["CONFIG", "WORKDIR"]),
    ("local_multiprocess.sh", ["2", "CONFIG=eccv16"], ["WORKDIR"]),
    ("single_host.sh", ["WORKDIR=/tmp/x"], ["CONFIG"]),
    ("slurm.sbatch", [], ["CONFIG", "WORKDIR", "SLURM_JOB_ID"]),
    ("tpu_pod.sh", ["CONFIG=eccv16"], ["TPU_NAME", "ZONE", "WORKDIR"]),
])
def test_launchers_name_the_missing_variables(script, args, missing):
  result = subprocess.run(["bash", str(LAUNCH / script), *args], cwd=REPO, env=_clean_env(),
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 2
  assert f"missing required variable(s): {' '.join(missing)}" in result.stderr, result.stderr


def test_local_multiprocess_sets_the_distributed_environment_and_passes_overrides(tmp_path):
  record = tmp_path / "record.jsonl"
  env = _clean_env(RECORD=str(record), XLA_FLAGS="--xla_cpu_foo=1 "
                   "--xla_force_host_platform_device_count=8",
                   JAX_COMPILATION_CACHE_DIR=str(tmp_path / "cache"))
  result = subprocess.run(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), "3", "CONFIG=eccv16:tiny",
       f"WORKDIR={tmp_path / 'w'}", "PLATFORM=cpu", "DEVICES_PER_PROCESS=2", "PORT=12345",
       f"PYTHON={_fake(tmp_path, 'python')}", "train.steps=7", "--config.seed", "3"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  calls = sorted(_records(record), key=lambda c: int(c["env"]["JAX_PROCESS_ID"]))
  assert [c["env"]["JAX_PROCESS_ID"] for c in calls] == ["0", "1", "2"]
  for call in calls:
    assert call["argv"] == ["-m", "colorjax.cli", "train", "--config", "eccv16:tiny",
                            "--workdir", str(tmp_path / "w"), "--config.train.steps=7",
                            "--config.seed", "3"]
    assert call["env"]["JAX_COORDINATOR_ADDRESS"] == "127.0.0.1:12345"
    assert call["env"]["JAX_NUM_PROCESSES"] == "3"
    assert call["env"]["JAX_PLATFORMS"] == "cpu"
    assert call["env"]["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"
    # Only process 0 would get cache hits: the others would reach gloo's rendezvous late.
    assert "JAX_COMPILATION_CACHE_DIR" not in call["env"]


def test_local_multiprocess_splits_the_gpus_between_processes(tmp_path):
  record = tmp_path / "record.jsonl"
  env = _clean_env(RECORD=str(record), CUDA_VISIBLE_DEVICES="4,5,6,7", GPU_XLA_FLAGS="--x=1")
  result = subprocess.run(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), "2", "CONFIG=eccv16", "WORKDIR=w",
       f"PYTHON={_fake(tmp_path, 'python')}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stderr
  calls = sorted(_records(record), key=lambda c: int(c["env"]["JAX_PROCESS_ID"]))
  assert [c["env"]["CUDA_VISIBLE_DEVICES"] for c in calls] == ["4,5", "6,7"]
  assert all(c["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1" for c in calls)
  assert all("--x=1" in c["env"]["XLA_FLAGS"].split() for c in calls)
  assert all("JAX_PLATFORMS" not in c["env"] for c in calls)


def test_local_multiprocess_stops_the_others_when_one_fails(tmp_path):
  record = tmp_path / "record.jsonl"
  behaviour = {"0": "sleep 60", "1": "exit 3 0.5", "2": "sleep 60"}
  env = _clean_env(RECORD=str(record), FAKE_BEHAVIOUR=json.dumps(behaviour))
  start = time.monotonic()
  result = subprocess.run(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), "3", "CONFIG=c", "WORKDIR=w",
       "PLATFORM=cpu", f"PYTHON={_fake(tmp_path, 'python')}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  assert result.returncode == 3, result.stderr
  assert time.monotonic() - start < 30
  assert "process 1 exited with status 3" in result.stderr
  assert sorted((tmp_path / "record.jsonl.term").read_text().split()) == ["0", "2"]


def test_local_multiprocess_forwards_sigterm(tmp_path):
  record = tmp_path / "record.jsonl"
  env = _clean_env(RECORD=str(record), FAKE_BEHAVIOUR=json.dumps({"0": "sleep 60",
                                                                  "1": "sleep 60"}))
  proc = subprocess.Popen(
      ["bash", str(LAUNCH / "local_multiprocess.sh"), "2", "CONFIG=c", "WORKDIR=w",
       "PLATFORM=cpu", f"PYTHON={_fake(tmp_path, 'python')}"],
      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 30
  while len(_records(record)) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=30)
  assert proc.returncode != 0, stderr
  assert sorted((tmp_path / "record.jsonl.term").read_text().split()) == ["0", "1"]


def test_single_host_runs_one_process_on_all_devices(tmp_path):
  record = tmp_path / "record.jsonl"
  result = subprocess.run(
      ["bash", str(LAUNCH / "single_host.sh"), "CONFIG=eccv16", "WORKDIR=w", "CPU_DEVICES=4",
       f"PYTHON={_fake(tmp_path, 'python')}", "data.train=/data/x"],
      cwd=REPO, env=_clean_env(RECORD=str(record), CUDA_VISIBLE_DEVICES=""),
      capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  (call,) = _records(record)
  assert call["argv"] == ["-m", "colorjax.cli", "train", "--config", "eccv16", "--workdir", "w",
                          "--config.distributed=off", "--config.data.train=/data/x"]
  assert call["env"]["XLA_FLAGS"].endswith("--xla_force_host_platform_device_count=4")


def test_slurm_sbatch_runs_srun_with_all_gpus_per_node_when_one_task_per_node(tmp_path):
  record = tmp_path / "record.jsonl"
  _fake(tmp_path, "srun")
  env = _clean_env(RECORD=str(record), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                   SLURM_JOB_ID="77", SLURM_SUBMIT_DIR=str(REPO), SLURM_NTASKS_PER_NODE="1",
                   SLURM_NNODES="2", SLURM_GPUS_ON_NODE="4", GPU_XLA_FLAGS="--x=1")
  result = subprocess.run(["bash", str(LAUNCH / "slurm.sbatch"), "eccv16", "/shared/run",
                           "optimizer.lr=1e-4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  (call,) = _records(record)
  command = call["argv"][call["argv"].index("--kill-on-bad-exit=1") + 1:]
  assert command[1:] == ["-m", "colorjax.cli", "train", "--config", "eccv16", "--workdir",
                         "/shared/run", "--config.optimizer.lr=1e-4"]
  assert call["env"]["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3"
  assert "--x=1" in call["env"]["XLA_FLAGS"].split()


def test_tpu_pod_runs_the_same_command_on_every_worker_with_a_shared_workdir(tmp_path):
  record = tmp_path / "record.jsonl"
  gcloud = _fake(tmp_path, "gcloud")
  args = ["bash", str(LAUNCH / "tpu_pod.sh"), "TPU_NAME=pod", "ZONE=us-central2-b",
          "CONFIG=eccv16", f"GCLOUD={gcloud}", "train.steps=10", "--config.data.train",
          "gs://b/my data"]
  refused = subprocess.run(args + ["WORKDIR=/tmp/local"], env=_clean_env(RECORD=str(record)),
                           capture_output=True, text=True, timeout=30)
  assert refused.returncode == 2 and "gs://" in refused.stderr and not record.exists()

  result = subprocess.run(args + ["WORKDIR=gs://b/run"], env=_clean_env(RECORD=str(record)),
                          capture_output=True, text=True, timeout=30)
  assert result.returncode == 0, result.stderr
  (call,) = _records(record)
  assert call["argv"][:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert "--worker=all" in call["argv"] and "--zone=us-central2-b" in call["argv"]
  (command,) = [a[len("--command="):] for a in call["argv"] if a.startswith("--command=")]
  words = shlex.split(command)
  assert words[:3] == ["cd", "~/colorjax", "&&"]
  assert words[words.index("-m"):] == [
      "-m", "colorjax.cli", "train", "--config", "eccv16", "--workdir", "gs://b/run",
      "--config.distributed=on", "--config.train.steps=10", "--config.data.train", "gs://b/my data"]
