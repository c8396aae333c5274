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


def test_train_eval_colorize_prior(small_photos, tmp_path, capsys):
  workdir = tmp_path / "wd"
  assert cli.main(["train", "--config", "eccv16:tiny", "--workdir", str(workdir),
                   "--config.train.steps=2", "--config.train.eval_every=2",
                   f"--config.data.train={small_photos}", "--config.data.eval_fraction=0"]) == 0
  assert (workdir / "config.json").is_file() and (workdir / "metrics.jsonl").is_file()

  out = tmp_path / "m.json"
  assert cli.main(["eval", "--checkpoint", str(workdir), "--data", str(small_photos),
                   "--out", str(out), "--size", "32"]) == 0
  result = json.loads(out.read_text())
  assert result["images"] == 5 and result["protocol"] == "full" and result["output"] == "ab"
  assert "images/s" in capsys.readouterr().out
  for section in ("model", "gray"):
    assert {"psnr", "ssim", "mse", "auc", "auc_rebalanced", "colorfulness",
            "top1_bin_accuracy"} <= set(result[section])
  assert "colorfulness" in result["truth"]
  assert (tmp_path / "m.csv").read_text().count("\n") == 6

  colorized = tmp_path / "colorized"
  assert cli.main(["colorize", str(small_photos), "--checkpoint", str(workdir),
                   "--output", str(colorized), "--quiet"]) == 0
  written = sorted(colorized.rglob("*.png"))
  assert len(written) == 5 and Image.open(written[0]).size == (48, 40)

  prior_path = tmp_path / "prior.npy"
  assert cli.main(["prior", str(small_photos), str(prior_path)]) == 0
  prior = np.load(prior_path)
  assert prior.shape == (313,) and prior.sum() == pytest.approx(1.0, abs=1e-5)


def test_import_official_weights_then_colorize(tmp_path, photos_dir):
  torch = pytest.importorskip("torch")
  from eccv16_test import _release_module  # pylint: disable=g-import-not-at-top
  from colorjax import color  # pylint: disable=g-import-not-at-top
  release = _release_module(1.0)
  with torch.no_grad():
    release.model_out.weight.copy_(torch.from_numpy(color.AB_BINS.T[:, :, None, None] / 110.0))
  pth = tmp_path / "release.pth"
  torch.save(release.state_dict(), pth)
  del release
  model_dir = tmp_path / "eccv16"
  assert cli.main(["import", "eccv16", str(pth), str(model_dir)]) == 0
  one = tmp_path / "in"
  one.mkdir()
  shutil.copy(sorted(photos_dir.glob("*.jpg"))[0], one / "a.jpg")
  for source in (["--checkpoint", str(model_dir)], ["--weights", str(pth)]):
    out = tmp_path / ("out" + source[0])
    assert cli.main(["colorize", str(one), "--output", str(out), "--size", "32", "--quiet",
                     *source]) == 0
    assert (out / "a.png").is_file()


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
