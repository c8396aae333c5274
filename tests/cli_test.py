"""Tests of the `colorjax` command: each subcommand end to end on tiny settings, and its errors."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from colorjax import cli


@pytest.fixture
def small_photos(photos_dir, tmp_path):
  folder = tmp_path / "photos" / "fruit"
  folder.mkdir(parents=True)
  for path in sorted(photos_dir.glob("*.jpg"))[:5]:
    Image.open(path).resize((48, 40)).save(folder / (path.stem + ".png"))
  return tmp_path / "photos"


def test_train_resume_eval_colorize_prior_prepare_report_with_relative_paths(
    small_photos, tmp_path, monkeypatch):
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
  assert result["images"] == 5 and result["protocol"] == "full"
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
