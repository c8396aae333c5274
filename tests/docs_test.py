"""Every command example of README.md and launch/README.md, run as written, so that none can rot.

The commands run from a temporary working directory holding what the examples assume a user has
(their photos, the release's weights file, a prepared dataset: made here), with the examples'
relative paths. Where an example would take long, tiny settings are appended to it (a later
flag overrides an earlier one; the command is otherwise unchanged). Paths on a user's own
machine that a test cannot have (`/data/imagenet`) are replaced by ones made here, listed in
`SUBSTITUTES`. The README's two install-and-run commands are run by `.ci/run` itself, in a fresh
clone. A new command shape in the READMEs fails `test_every_example_is_known` until it is
given its tiny settings here.
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import socket
import subprocess
import sys

import pytest
from PIL import Image

from colorjax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
RELEASE_WEIGHTS = ("colorization_release_v2-9b330a0b.pth", "eccv16.pth")
SUBSTITUTES = {"/data/imagenet_prepared": "prepared", "/data/imagenet": "my_photos"}
# XLA's own convolutions: on CPU a tiny step compiles 2-3x faster than with the default lowering,
# and these tests are about the commands, not the convolutions.
FAST_COMPILE = {"model.conv_impl": "xla"}
TINY_MODEL = {"model.width": "0.0625", "model.ngf": "4", "data.crop_size": "32",
              "data.resize_size": "40", "data.eval_size": "32", "data.eval_images": "4",
              "train.batch_size": "8", **FAST_COMPILE}
TINY_NETWORKS = {"model.width": "0.0625", "model.ngf": "4", "disc.ndf": "4", **FAST_COMPILE}
TINY_TRAIN = {**TINY_MODEL, "train.steps": "2", "train.eval_every": "2",
              "train.checkpoint_every": "2", "train.log_every": "1"}


def _fenced(path: pathlib.Path, language: str) -> list[str]:
  return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.M | re.S)


def _commands(block: str) -> list[str]:
  """The block's commands, continuation lines joined and comments dropped."""
  text = block.replace("\\\n", " ")
  return [" ".join(shlex.split(line, comments=True)) for line in text.splitlines()
          if shlex.split(line, comments=True)]


def readme_commands() -> list[str]:
  """Shell commands of README.md's fenced blocks, but the install-and-run ones CI runs."""
  return [c for block in _fenced(REPO / "README.md", "bash") for c in _commands(block)
          if "pip install" not in c]


def launch_examples() -> list[str]:
  """The launch scripts' examples: launch/README.md's table and the README's multi-process one."""
  examples = []
  for path in (REPO / "launch" / "README.md", REPO / "README.md"):
    examples += re.findall(r"`((?:sbatch [^`]*)?launch/[a-z_]+\.(?:sh|sbatch) [^`]+)`",
                           path.read_text())
  # An example that another one extends (with more overrides) is run as the longer one.
  return [e for e in dict.fromkeys(examples)
          if not any(o != e and o.startswith(e + " ") for o in examples)]


def _argv(command: str) -> list[str]:
  words = shlex.split(command)
  return [SUBSTITUTES.get(w, w) if "=" not in w else
          w.split("=", 1)[0] + "=" + SUBSTITUTES.get(w.split("=", 1)[1], w.split("=", 1)[1])
          for w in words]


def _tiny_args(argv: list[str]) -> list[str]:
  """What is appended to a `colorjax ...` or `python -m ...` example so that it runs in seconds."""
  if argv[:2] == ["colorjax", "train"]:
    return [f"--config.{k}={v}" for k, v in TINY_TRAIN.items()]
  if argv[:2] == ["colorjax", "bench"]:
    return ["--steps", "1", "--no-pipeline", *(f"--config.{k}={v}" for k, v in TINY_MODEL.items())]
  release_network = "--weights" in argv or "eccv16_model/" in argv  # at full width
  if argv[:2] == ["colorjax", "colorize"] and release_network:
    return ["--size", "32"]
  if argv[:2] == ["colorjax", "eval"] and release_network:  # colorize's batch: the same program
    return ["--size", "32", "--batch-size", "2"]
  if argv[:3] == ["python", "-m", "benchmarks.compare"]:  # torch's networks follow the sizes
    return ["--size", "32", "--repeats", "1", "--batch", "2",
            *(f"--config.{k}={v}" for k, v in TINY_NETWORKS.items())]
  if argv[:2] == ["colorjax", "demo"]:
    with socket.socket() as s:  # a free port, not the example's
      s.bind(("127.0.0.1", 0))
      return ["--port", str(s.getsockname()[1])]
  return []


def _run_demo(argv: list[str], monkeypatch) -> None:
  """`colorjax demo ...`: loads its models, serves, and is stopped as Ctrl+C stops it."""
  from colorjax import demo  # pylint: disable=g-import-not-at-top
  if not demo.gradio_available():
    pytest.skip("gradio missing: pip install -e '.[test]'")

  def interrupt():
    raise KeyboardInterrupt

  monkeypatch.setattr(demo, "wait_for_interrupt", interrupt)
  assert cli.main(argv[1:]) == 0, " ".join(argv)


def test_every_example_is_known():
  commands = readme_commands()
  assert any(c.startswith("colorjax train") for c in commands)
  for command in commands:
    argv = shlex.split(command)
    assert argv[0] == "colorjax" and argv[1] in _subcommands() or \
        argv[:3] == ["python", "-m", "benchmarks.compare"], f"README command not run here: {command}"
  assert {c.split()[0] if not c.startswith("sbatch") else "sbatch" for c in launch_examples()} \
      == {"launch/single_host.sh", "launch/local_multiprocess.sh", "launch/tpu_pod.sh", "sbatch"}


def _subcommands() -> set[str]:
  return set(cli.build_parser()._subparsers._group_actions[0].choices)  # pylint: disable=protected-access


@pytest.fixture
def user_dir(tmp_path, monkeypatch, photos_dir):
  """A working directory with a user's photos, the release weights and a prepared dataset."""
  torch = pytest.importorskip("torch")
  from eccv16_test import _release_module  # pylint: disable=g-import-not-at-top
  from colorjax import color  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  for folder, count in (("my_photos", 4), ("old_photos", 2)):
    (tmp_path / folder).mkdir()
    for path in sorted(photos_dir.glob("*.jpg"))[:count]:
      Image.open(path).convert("RGB").resize((56, 40)).save(tmp_path / folder / path.name)
  shutil.copy(tmp_path / "my_photos" / sorted(os.listdir("my_photos"))[0], "photo.jpg")
  release = _release_module(1.0)
  with torch.no_grad():
    release.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  torch.save(release.state_dict(), RELEASE_WEIGHTS[0])
  os.link(RELEASE_WEIGHTS[0], RELEASE_WEIGHTS[1])
  assert cli.main(["prepare", "my_photos", "prepared"]) == 0
  (tmp_path / "launch").symlink_to(REPO / "launch")
  return tmp_path


def test_readme_commands_run_as_written(user_dir, capsys, monkeypatch):
  commands = readme_commands()
  # Trainings first: later examples read their workdirs (`workdir`, the default).
  commands.sort(key=lambda c: not c.startswith("colorjax train"))
  for command in commands:
    argv = _argv(command)
    argv += _tiny_args(argv)
    if argv[:2] == ["colorjax", "demo"]:
      _run_demo(argv, monkeypatch)
    elif argv[0] == "colorjax":
      assert cli.main(argv[1:]) == 0, command
    else:
      from benchmarks import compare  # pylint: disable=g-import-not-at-top
      assert compare.main(argv[3:]) in (0, None), command
  out = capsys.readouterr().out
  demos = sum(c.startswith("colorjax demo") for c in commands)
  assert demos and out.count("colorjax demo: serving") == demos
  assert out.count("colorjax demo: stopped") == demos
  assert json.loads([line for line in out.splitlines() if line.startswith("{")][0])  # bench
  assert len(list((user_dir / "colorized").glob("*.png"))) == 2  # old_photos/
  assert (user_dir / "metrics.json").is_file() and (user_dir / "eccv16_model").is_dir()
  for workdir in ("workdir", "runs/q", "runs/full"):
    assert (user_dir / workdir / "checkpoints" / "2").is_dir(), workdir

  # The notebook example (```python), as written, with the model trained above.
  (python_example,) = _fenced(REPO / "README.md", "python")
  namespace = {}
  exec(python_example, namespace)  # pylint: disable=exec-used
  assert namespace["rgb_uint8"].shape == (40, 56, 3)


def test_launch_examples_run_as_written(user_dir, tmp_path):
  from launch_test import _clean_env, _fake, _records  # pylint: disable=g-import-not-at-top
  record = tmp_path / "record.jsonl"
  _fake(tmp_path, "srun")
  gcloud = _fake(tmp_path, "gcloud")
  # Cluster commands (sbatch's srun, gcloud) are stand-ins that record their call.
  env = _clean_env(RECORD=str(record), PYTHON=sys.executable, GCLOUD=str(gcloud),
                   PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SLURM_JOB_ID="7",
                   SLURM_SUBMIT_DIR=str(user_dir), SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="4")
  for example in launch_examples():
    argv = _argv(example)
    if argv[0] == "sbatch":
      argv = ["bash", *[a for a in argv[1:] if not a.startswith("--nodes")]]
    else:
      argv = ["bash", *argv]
    if "CONFIG=eccv16" in argv:
      argv += [f"{k}={v}" for k, v in TINY_TRAIN.items()]
    else:
      argv += ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2",
               *(f"{k}={v}" for k, v in FAST_COMPILE.items())]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, f"{example}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
  for workdir in ("runs/eccv16", "runs/mp"):  # trained for real, relative to the cwd
    assert (user_dir / workdir / "checkpoints" / "2").is_dir(), workdir
  commands = [call["argv"] for call in _records(record)]
  assert len(commands) == 2  # srun and gcloud, each with the train command
