"""Tests of colorjax.writers: JSON lines, TensorBoard event files and the console line."""
import io
import json
import subprocess
import sys

import numpy as np

import conftest
from colorjax import writers


def test_scalars_images_and_text_are_written(tmp_path):
  w = writers.MetricWriter(tmp_path, total_steps=10)
  w.write_scalars(1, {"train/loss": 2.5, "perf/images_per_s": 3.0})
  w.write_scalars(2, {"train/loss": 2.0})
  w.write_images(2, {"eval/grid": np.zeros((4, 6, 3), np.uint8)})
  w.write_text("config", "a: 1")
  w.close()
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert rows == [{"step": 1, "train/loss": 2.5, "perf/images_per_s": 3.0},
                  {"step": 2, "train/loss": 2.0}]
  events = list((tmp_path / "tensorboard").iterdir())
  assert events and events[0].stat().st_size > 0


def test_the_tensorboard_writer_does_not_import_torch(tmp_path):
  # tensorboardX imports an installed torch by itself; in a fresh process, as other tests use torch.
  program = ("import sys, numpy as np\nfrom colorjax import writers\n"
             "w = writers.MetricWriter('run', total_steps=2)\n"
             "w.write_scalars(1, {'train/loss': 1.0})\n"
             "w.write_images(1, {'eval/grid': np.zeros((4, 6, 3), np.uint8)})\nw.close()\n"
             "print('torch' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["False"]
  assert any((tmp_path / "run" / "tensorboard").iterdir())


def test_console_line_has_progress_and_eta():
  w = writers.MetricWriter(None, total_steps=100)
  w.write_scalars(10, {"train/loss": 1.0})
  line = w._console_line(20, {"train/loss": 0.5, "perf/images_per_s": 4.0})  # pylint: disable=protected-access
  assert line.startswith("step 20/100 | ETA ") and "train/loss=0.5" in line
  assert writers._format_duration(3725) == "1:02:05"  # pylint: disable=protected-access


def test_step_timer_measures_images_per_second():
  timer = writers.StepTimer(global_batch_size=8, start_step=0)
  out = timer.measure(4)
  assert out["perf/images_per_s"] == 8 / out["perf/step_time_s"]
  assert timer.measure(4) == {}


def test_step_timer_reports_tflops_and_mfu():
  timer = writers.StepTimer(global_batch_size=8, start_step=0, flops_per_step=3e12,
                            peak_flops_per_s=1e13)
  out = timer.measure(2)
  step_s = out["perf/step_time_s"]
  np.testing.assert_allclose(out["perf/model_tflops_per_s"], 3.0 / step_s)
  np.testing.assert_allclose(out["perf/mfu"], 0.3 / step_s)
  assert "perf/mfu" not in writers.StepTimer(8, 0, flops_per_step=3e12).measure(1)


def test_samples_go_to_png_and_tensorboard(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  grid = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
  w = writers.MetricWriter(tmp_path, total_steps=10)
  w.write_samples(7, grid)
  w.close()
  png = tmp_path / "samples" / "step_00000007.png"
  np.testing.assert_array_equal(np.asarray(Image.open(png)), grid)
  images = [(step, value)
            for step, tag, value in conftest.tensorboard_values(tmp_path / "tensorboard")
            if tag == "eval/gray_model_truth"]
  assert len(images) == 1 and images[0][0] == 7
  decoded = np.asarray(Image.open(io.BytesIO(images[0][1].image.encoded_image_string)))
  np.testing.assert_array_equal(decoded, grid)
  # Without files (another process, or no workdir) nothing is written.
  writers.MetricWriter(tmp_path / "off", total_steps=10, write_files=False).write_samples(1, grid)
  assert not (tmp_path / "off").exists()
