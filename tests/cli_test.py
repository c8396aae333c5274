"""Tests of the `colorjax` command: each subcommand end to end on tiny settings, and its errors."""
import contextlib
import io
import json
import logging
import os
import pathlib
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import conftest
from colorjax import cli


@pytest.fixture
def small_photos(photos_dir, tmp_path):
  folder = tmp_path / "photos" / "fruit"
  folder.mkdir(parents=True)
  for path in sorted(photos_dir.glob("*.jpg"))[:5]:
    Image.open(path).resize((48, 40)).save(folder / (path.stem + ".png"))
  return tmp_path / "photos"


def test_train_resume_eval_colorize_prior_prepare_report_with_relative_paths(
    small_photos, tmp_path, monkeypatch, capsys):
  # Every path relative to the current directory, as a user types them (Orbax itself refuses
  # relative paths: the default `--workdir workdir` once crashed at the first checkpoint).
  monkeypatch.chdir(tmp_path)
  photos = "photos"
  tiny = ["--config", "eccv16:tiny", "--workdir", "wd", f"--config.data.train={photos}",
          "--config.data.eval_fraction=0", "--config.train.eval_every=2"]
  assert cli.main(["train", *tiny, "--config.train.steps=2"]) == 0
  assert (tmp_path / "wd" / "config.json").is_file() and (tmp_path / "wd" / "metrics.jsonl").is_file()
  assert sorted(p.name for p in (tmp_path / "wd" / "checkpoints").iterdir()) == ["2"]
  saved = json.loads((tmp_path / "wd" / "config.json").read_text())
  assert saved["data"]["train"] == str(tmp_path / photos)  # absolute: eval works from anywhere

  assert cli.main(["train", *tiny, "--config.train.steps=4"]) == 0  # resumes at step 2
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
  assert set(steps) == {1, 2, 3, 4} and steps.count(1) == 1  # steps 1-2 were not trained again
  assert "4" in [p.name for p in (tmp_path / "wd" / "checkpoints").iterdir()]

  assert cli.main(["eval", "--checkpoint", "wd", "--data", photos, "--out", "m.json",
                   "--size", "32"]) == 0
  result = json.loads((tmp_path / "m.json").read_text())
  assert result["images"] == 5 and result["protocol"] == "full" and result["output"] == "ab"
  assert "images/s" in capsys.readouterr().out
  for section in ("model", "gray"):
    assert {"psnr", "ssim", "mse", "auc", "auc_rebalanced", "colorfulness",
            "top1_bin_accuracy"} <= set(result[section])
  assert "colorfulness" in result["truth"]
  assert (tmp_path / "m.csv").read_text().count("\n") == 6

  assert cli.main(["colorize", photos, "--checkpoint", "wd", "--output", "colorized/",
                   "--quiet"]) == 0
  written = sorted((tmp_path / "colorized").rglob("*.png"))
  assert len(written) == 5 and Image.open(written[0]).size == (48, 40)

  assert cli.main(["prior", photos, "prior.npy"]) == 0
  prior = np.load(tmp_path / "prior.npy")
  assert prior.shape == (313,) and prior.sum() == pytest.approx(1.0, abs=1e-5)

  assert cli.main(["prepare", photos, "prepared"]) == 0
  assert cli.main(["prior", "prepared", "prior_prepared.npy"]) == 0
  np.testing.assert_allclose(np.load(tmp_path / "prior_prepared.npy"), prior, atol=1e-6)

  assert cli.main(["report", "wd", "--out", "report", "--game-pairs", "colorized", photos]) == 0
  assert (tmp_path / "report" / "index.html").is_file()
  assert (tmp_path / "report" / "game.html").is_file()


def test_paths_expand_home(small_photos, tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.chdir(small_photos)  # anywhere but the home directory
  assert cli.main(["prior", "~/photos", "~/p.npy", "--size", "32"]) == 0
  assert (tmp_path / "p.npy").is_file()


def test_import_official_weights_then_colorize(tmp_path, photos_dir, monkeypatch):
  torch = pytest.importorskip("torch")
  from eccv16_test import _release_module  # pylint: disable=g-import-not-at-top
  from colorjax import color  # pylint: disable=g-import-not-at-top
  release = _release_module(1.0)
  with torch.no_grad():
    release.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  pth = tmp_path / "release.pth"
  torch.save(release.state_dict(), pth)
  del release
  monkeypatch.chdir(tmp_path)
  assert cli.main(["import", "eccv16", "release.pth", "eccv16"]) == 0
  one = tmp_path / "in"
  one.mkdir()
  shutil.copy(sorted(photos_dir.glob("*.jpg"))[0], one / "a.jpg")
  for source in (["--checkpoint", "eccv16"], ["--weights", "release.pth"]):
    out = "out" + source[0]
    assert cli.main(["colorize", "in", "--output", out, "--size", "32", "--quiet",
                     *source]) == 0
    assert (tmp_path / out / "a.png").is_file()


def test_user_errors_are_messages_not_tracebacks(tmp_path, capsys):
  assert cli.main(["eval", "--data", "bundled"]) == 2
  assert "--checkpoint" in capsys.readouterr().err
  assert cli.main(["colorize", str(tmp_path / "missing.jpg"), "--output", str(tmp_path),
                   "--checkpoint", str(tmp_path / "nowhere")]) == 2
  assert "nowhere" in capsys.readouterr().err
  assert cli.main(["train", "--config", "eccv16:tiny", "--config.optimizer.lrr=1"]) == 2
  assert "optimizer.lrr" in capsys.readouterr().err
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"PK\x03\x04 truncated")
  assert cli.main(["import", "eccv16", str(bad), str(tmp_path / "m")]) == 2
  assert "bad.pth" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Faults and bad input: every command finishes, skips and names broken files, and nothing in a
# workdir is lost or overwritten.
# ----------------------------------------------------------------------------------------------

NON_UTF8_GOOD = b"caf\xe9.jpg"    # a good photo whose name is not UTF-8
NON_UTF8_BROKEN = b"bad\xff.jpg"  # an unreadable one
# Broken files (shown as the CLI names them) and the odd-but-valid ones every command must take.
UNREADABLE = ("broken_empty.jpg", "broken_truncated.jpg", "broken_header.png", "broken_text.jpg",
              "broken_dangling.jpg", "bad\\xff.jpg", "broken_bomb.png")
ODD_VALID = ("odd_1x1.png", "odd_cmyk.jpg", "odd_gray16.png", "odd_rgba.png", "caf\\xe9.jpg")


def _broken_folder(folder, photos_dir, real=6):
  """Real photos (small) mixed with a broken file of every kind and valid files of odd kinds."""
  folder.mkdir(parents=True)
  photos = sorted(photos_dir.glob("*.jpg"))[:real]
  for path in photos:
    Image.open(path).convert("RGB").resize((48, 40)).save(folder / path.name)
  jpeg = (folder / photos[0].name).read_bytes()
  (folder / "broken_empty.jpg").write_bytes(b"")
  (folder / "broken_truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
  (folder / "broken_header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + jpeg[8:])
  (folder / "broken_text.jpg").write_text("not an image\n")
  os.symlink(folder / "nowhere" / "photo.jpg", folder / "broken_dangling.jpg")
  (pathlib.Path(os.fsdecode(os.fsencode(folder) + b"/" + NON_UTF8_GOOD))).write_bytes(jpeg)
  (pathlib.Path(os.fsdecode(os.fsencode(folder) + b"/" + NON_UTF8_BROKEN))).write_bytes(b"junk")
  # A 69-byte PNG whose header declares 100000 x 100000 pixels (a decompression bomb).
  def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
  (folder / "broken_bomb.png").write_bytes(
      b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
      + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
  Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "odd_1x1.png")
  rgb = Image.open(folder / photos[1].name)
  rgb.convert("CMYK").save(folder / "odd_cmyk.jpg")
  Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(folder / "odd_gray16.png")
  rgba = rgb.convert("RGBA")
  rgba.putalpha(128)
  rgba.save(folder / "odd_rgba.png")
  return folder


class _Records(logging.Handler):
  """Collects the records of a logger (the CLI's console handler is pytest's here)."""

  def __init__(self, logger_name, level=logging.DEBUG):
    super().__init__(level)
    self.records = []
    self.logger = logging.getLogger(logger_name)

  def emit(self, record):
    self.records.append(record)

  def text(self):
    return "\n".join(r.getMessage() for r in self.records)

  def __enter__(self):
    self.logger.addHandler(self)
    return self

  def __exit__(self, *exc):
    self.logger.removeHandler(self)


def _run(*argv):
  """cli.main(argv) -> (status, stderr); the console's absl and colorjax records collected."""
  err = io.StringIO()
  with _Records("colorjax") as colorjax_log, _Records("absl") as absl_log, \
      contextlib.redirect_stderr(err):
    status = cli.main(list(argv))
  return status, err.getvalue(), colorjax_log.text(), absl_log.records


def _snapshot(folder):
  return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
  """`colorjax train` (4 steps, checkpoints at 2 and 4) on a folder of broken files, from a cwd
  holding the folder (a relative data path)."""
  from conftest import PHOTOS_DIR  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("broken")
  _broken_folder(root / "mixed", PHOTOS_DIR)
  workdir = root / "wd"
  with pytest.MonkeyPatch.context() as mp:
    mp.chdir(root)
    status, err, log, _ = _run("train", "--config", "eccv16:tiny", "--workdir", str(workdir),
                               "--config.train.steps=4", "--config.data.train=mixed")
  return {"root": root, "workdir": workdir, "status": status, "err": err, "log": log}


def test_training_skips_and_names_every_broken_file(broken_run):
  assert broken_run["status"] == 0, broken_run["err"]
  assert "Traceback" not in broken_run["err"]
  summary = [line for line in broken_run["log"].splitlines() if line.startswith("input: ")][-1]
  skipped = int(summary.split(" unreadable skipped")[0].rsplit(" ", 1)[1])
  assert skipped >= 1
  for name in UNREADABLE:  # in the train split's summary or the eval split's warnings
    assert name in broken_run["log"], name
  assert "udc" not in broken_run["log"]  # no lone surrogate reached a message
  assert sorted(p.name for p in (broken_run["workdir"] / "checkpoints").iterdir()) == ["2", "4"]


def test_eval_prior_and_colorize_skip_and_name_every_broken_file(broken_run, monkeypatch):
  monkeypatch.chdir(broken_run["root"])
  workdir = str(broken_run["workdir"])
  status, err, _, absl = _run("eval", "--checkpoint", workdir, "--data", "mixed", "--out",
                              "m.json", "--size", "32")
  assert status == 0 and "Traceback" not in err, err
  assert not [r for r in absl if r.levelno >= logging.WARNING]  # Orbax's chatter: --verbose only
  result = json.loads(pathlib.Path("m.json").read_text())
  # The 1x1 image is too small for SSIM at full size: skipped, and said so.
  assert sorted(result["skipped_files"]) == sorted(UNREADABLE + ("odd_1x1.png",))
  assert result["skipped"] == len(UNREADABLE) + 1 and result["images"] == 6 + len(ODD_VALID) - 1
  for name in UNREADABLE:
    assert name in err
  assert "odd_1x1.png: 1x1 pixels is too small" in err
  rows = pathlib.Path("m.csv").read_text(encoding="utf-8")
  assert "\ncaf\\xe9.jpg," in rows

  status, err, log, _ = _run("prior", "mixed", "p.npy")
  assert status == 0 and "Traceback" not in err, err
  assert f"prior from {6 + len(ODD_VALID)} images ({len(UNREADABLE)} skipped)" in log
  for name in UNREADABLE:
    assert name in log
  assert np.load("p.npy").shape == (313,)

  status, err, _, absl = _run("colorize", "mixed", "--checkpoint", workdir, "--output", "out",
                              "--quiet")
  assert status == 1 and "Traceback" not in err, err  # 1: some inputs failed
  assert not [r for r in absl if r.levelno >= logging.WARNING]
  failed = [line for line in err.splitlines() if line.startswith("  failed: ")]
  assert len(failed) == len(UNREADABLE)
  for name in UNREADABLE:
    assert any(name in line for line in failed), name
  written = {os.fsencode(p.name) for p in pathlib.Path("out").iterdir()}
  assert len(written) == 6 + len(ODD_VALID) and b"caf\xe9.png" in written


def test_refused_resume_leaves_the_workdir_as_it_was(broken_run):
  workdir = broken_run["workdir"]
  before = _snapshot(workdir)
  status, err, _, _ = _run("train", "--config", "pix2pix:tiny", "--workdir", str(workdir),
                           "--config.data.train=bundled")
  assert status == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "checkpoints/4 does not fit this model/config" in lines[0], err
  assert _snapshot(workdir) == before  # config.json too: colorize still rebuilds the ECCV16


def test_damaged_latest_checkpoint_is_one_line_and_train_resumes_from_the_intact_one(
    broken_run, tmp_path, monkeypatch):
  workdir = tmp_path / "wd"
  shutil.copytree(broken_run["workdir"], workdir)
  monkeypatch.chdir(tmp_path)
  step_dir = workdir / "checkpoints" / "4"
  conftest.flip_a_bit_of_the_largest_file(step_dir / "state", divisor=3, bit=0x10)
  damaged = _snapshot(step_dir)

  status, err, _, _ = _run("colorize", str(broken_run["root"] / "mixed" / "odd_rgba.png"),
                           "--checkpoint", str(workdir), "--output", "out", "--quiet")
  assert status == 2
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "step 4" in lines[0] and "is damaged" in lines[0], err
  assert "--step (available: [2])" in lines[0]

  status, err, log, _ = _run("train", "--config", "eccv16:tiny", "--workdir", str(workdir),
                             "--config.train.steps=4",
                             f"--config.data.train={broken_run['root'] / 'mixed'}")
  assert status == 0 and "Traceback" not in err, err
  assert "checkpoint step 4" in log and "is damaged" in log
  assert f"resumed from {workdir / 'checkpoints'} at step 2" in log
  # The damaged step is kept, renamed; the run saved step 4 anew.
  assert _snapshot(workdir / "checkpoints" / "4.damaged") == damaged
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4", "4.damaged"]


def test_workdir_that_is_a_file_is_refused(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  pathlib.Path("notes.txt").write_text("mine")
  status, err, _, _ = _run("train", "--config", "eccv16:tiny",
                           "--workdir", str(tmp_path / "notes.txt"))
  assert status == 2 and err.strip().count("\n") == 0
  assert "notes.txt exists and is not a folder" in err
  assert pathlib.Path("notes.txt").read_text() == "mine"


@pytest.mark.parametrize("override, message", [
    ("--config.optimizer.lr=1e999", "config key optimizer.lr=inf must be a finite number"),
    # The relative path is named as made absolute where it entered.
    ("--config.data.train=no_such_folder", "no such image folder or dataset: /"),
])
def test_bad_config_is_refused_before_the_workdir_is_created(tmp_path, monkeypatch, override,
                                                             message):
  monkeypatch.chdir(tmp_path)
  status, err, _, _ = _run("train", "--config", "eccv16:tiny", "--workdir",
                           str(tmp_path / "wd"), override)
  assert status == 2 and err.strip().count("\n") == 0 and message in err, err
  assert override.rsplit("=", 1)[1].replace("1e999", "inf") in err
  assert not (tmp_path / "wd").exists()
