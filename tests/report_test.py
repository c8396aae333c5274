"""`colorjax report`: tables from fake run directories, grid cropping, and the game in a browser.

The browser tests drive Debian's Chromium headless through selenium and chromedriver
(`apt-get install -y chromium chromium-driver`, `pip install selenium`); they are skipped, saying
so, where those are not installed.
"""
import csv
import json
import pathlib
import re
import statistics

import numpy as np
import pytest
from PIL import Image

import conftest
from colorjax import metrics, report

STEPS = 40
EVAL_EVERY = 10


def photo_rows(photos_dir, first, n=3, size=32):
  """(gray, model, truth) triples from real photos; 'model' is a tinted truth."""
  rows = []
  for path in sorted(photos_dir.iterdir())[first:first + n]:
    with Image.open(path) as im:
      truth = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))
    gray = np.repeat(np.asarray(Image.fromarray(truth).convert("L"))[..., None], 3, -1)
    model = np.clip(truth.astype(int) + [25, 0, -25], 0, 255).astype(np.uint8)
    rows.append((gray, model, truth))
  return rows


def make_run(root: pathlib.Path, name: str, photos_dir, *, psnr_gain: float, first_photo: int,
             with_eval_json: bool) -> dict:
  """A run directory as `colorjax train` (+ `colorjax eval`) leave it; returns what was written."""
  d = root / name
  (d / "samples").mkdir(parents=True)
  config = {"model": {"name": "unet" if with_eval_json else "eccv16", "output": "ab"},
            "loss": {"kind": "l1", "gan": "vanilla"}, "disc": {"enabled": with_eval_json},
            "data": {"crop_size": 64, "eval_size": 32}, "train": {"batch_size": 8, "steps": STEPS}}
  (d / "config.json").write_text(json.dumps(config))
  history = []
  for step in range(1, STEPS + 1):
    row = {"step": step, "train/loss": 3.0 / step + psnr_gain / 10, "perf/images_per_s": 5.0}
    if step % EVAL_EVERY == 0:
      row.update({"eval/model/psnr": 20 + psnr_gain * step / STEPS, "eval/gray/psnr": 21.125,
                  "eval/model/auc": 0.9 - 0.01 * step / STEPS, "eval/gray/auc": 0.875})
    history.append(row)
  with open(d / "metrics.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in history)
    f.write('{"step": 41, "train/lo')  # a line being written when the report is made
  rows = photo_rows(photos_dir, first_photo)
  for step in (EVAL_EVERY, STEPS):  # an older grid that must not be the one shown
    grid_rows = rows if step == STEPS else [tuple(np.zeros_like(rows[0][0]) for _ in range(3))]
    Image.fromarray(metrics.image_grid(grid_rows)).save(d / "samples" / f"step_{step:08d}.png")
  per_image = []
  for i, folder in enumerate(["birds", "birds", "fish", "fish", "fish", "", ""]):
    per_image.append({"image": f"{folder}/img{i}.jpg" if folder else f"img{i}.jpg",
                      "model/psnr": 22 + psnr_gain + i, "gray/psnr": 20 + 0.5 * i,
                      "model/ssim": 0.9 - 0.01 * i, "gray/ssim": 0.8})
  with open(d / "metrics.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(per_image[0]))
    writer.writeheader()
    writer.writerows(per_image)
  eval_json = None
  if with_eval_json:
    eval_json = {"images": 7, "protocol": "full",
                 "model": {"psnr": 23.4567, "ssim": 0.91234, "auc": 0.9012, "fid": 12.345,
                           "colorfulness_gap": -4.25},
                 "gray": {"psnr": 21.0, "ssim": 0.95, "auc": 0.88, "fid": 40.5,
                          "colorfulness_gap": -30.0},
                 "truth": {"colorfulness": 30.0}}
    (d / "metrics.json").write_text(json.dumps(eval_json))
  return {"dir": d, "history": history, "rows": rows, "per_image": per_image,
          "eval_json": eval_json}


@pytest.fixture(scope="module")
def built(tmp_path_factory, photos_dir_module):
  root = tmp_path_factory.mktemp("runs")
  runs = [make_run(root, "baseline", photos_dir_module, psnr_gain=1.5, first_photo=0,
                   with_eval_json=False),
          make_run(root, "gan", photos_dir_module, psnr_gain=2.5, first_photo=3,
                   with_eval_json=True)]
  out = root / "report"
  index = report.write_report([r["dir"] for r in runs], out, title="two runs")
  return {"runs": runs, "out": out, "index": index}


@pytest.fixture(scope="module")
def photos_dir_module():
  return pathlib.Path(__file__).resolve().parents[1] / "colorjax" / "assets" / "photos"


def md_rows(text: str, first_cell: str) -> list[list[str]]:
  return [[c.strip() for c in line.strip().strip("|").split("|")]
          for line in text.splitlines()
          if line.startswith("|") and line.strip("| ").startswith(first_cell + " ")]


# ----------------------------------------------------------------------------------------------
# Tables and files
# ----------------------------------------------------------------------------------------------


def test_report_has_both_runs_numbers_and_deltas(built):
  out, (base, gan) = built["out"], built["runs"]
  assert built["index"] == out / "index.html"
  md = (out / "report.md").read_text()
  page = (out / "index.html").read_text()

  # baseline: no metrics.json, so its last training eval, beside gray
  last = base["history"][-1]
  row = md_rows(md, "baseline")[0]
  psnr, gray = last["eval/model/psnr"], last["eval/gray/psnr"]
  assert row[2] == str(STEPS)
  assert "'center' protocol" in row[3] and "32x32" in row[3]
  assert row[4:7] == [f"{psnr:.2f}", f"{gray:.2f}", f"{psnr - gray:+.2f}"]
  auc_cells = row[row.index(f"{last['eval/model/auc']:.4f}"):][:3]
  assert auc_cells == [f"{last['eval/model/auc']:.4f}", f"{last['eval/gray/auc']:.4f}",
                       f"{last['eval/model/auc'] - last['eval/gray/auc']:+.4f}"]

  # gan: metrics.json of `colorjax eval` wins, with its protocol; FID lower is better
  row = md_rows(md, "gan")[0]
  m, g = gan["eval_json"]["model"], gan["eval_json"]["gray"]
  assert "'full' protocol, 7 images" in row[3]
  assert row[4:7] == [f"{m['psnr']:.2f}", f"{g['psnr']:.2f}", f"{m['psnr'] - g['psnr']:+.2f}"]
  header = md_rows(md, "run")[0]
  fid_col = header.index("FID ↓")
  assert row[fid_col:fid_col + 3] == ["12.35", "40.50", "-28.16"]
  gap_col = header.index("colorfulness − truth →0")
  assert row[gap_col:gap_col + 3] == ["-4.25", "-30.00", "+25.75"]
  assert md_rows(md, "baseline")[0][gap_col] == "—"  # not logged by that run
  assert "unet -> ab, loss l1, + vanilla GAN" in row[1]

  for text in (md, page):
    assert "1 unreadable line(s) of metrics.jsonl skipped" in text
    assert f"{psnr:.2f}" in text and f"{m['psnr']:.2f}" in text


def test_per_folder_breakdown_groups_by_first_path_component(built):
  md = (built["out"] / "report.md").read_text()
  for run in built["runs"]:
    section = md.split(f"## {run['dir'].name}\n", 1)[1].split("\n## ", 1)[0]
    rows = {r[0]: r for r in md_rows(section, "birds") + md_rows(section, "fish")
            + md_rows(section, "(top level)") + md_rows(section, "all images")}
    groups = {"birds": [0, 1], "fish": [2, 3, 4], "(top level)": [5, 6],
              "all images": list(range(7))}
    for name, idx in groups.items():
      per = [run["per_image"][i] for i in idx]
      model = statistics.mean(r["model/psnr"] for r in per)
      gray = statistics.mean(r["gray/psnr"] for r in per)
      ssim = statistics.mean(r["model/ssim"] for r in per)
      ssim_gray = statistics.mean(r["gray/ssim"] for r in per)
      assert rows[name][1:] == [str(len(idx)), f"{model:.2f}", f"{model - gray:+.2f}",
                                f"{ssim:.4f}", f"{ssim - ssim_gray:+.4f}"], name


def test_pages_reference_only_local_files_that_exist(built):
  out = built["out"]
  for page in ("index.html", "game.html"):
    text = (out / page).read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert refs, page
    for ref in refs:
      assert not re.match(r"[a-z]+://", ref), f"{page} loads {ref} from the network"
      if not ref.startswith("data:"):
        assert (out / ref).is_file(), f"{page}: {ref} is missing"
  # the latest grid is shown, not the older one
  shown = Image.open(out / "images" / f"baseline-step_{STEPS:08d}.png")
  want = metrics.image_grid(built["runs"][0]["rows"])
  np.testing.assert_array_equal(np.asarray(shown), want)


def test_charts_plot_every_logged_point(built):
  page = (built["out"] / "index.html").read_text()
  svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
  titles = [re.search(r"<title>(.*?)</title>", s).group(1) for s in svgs]
  assert titles == ["train/loss", "eval/model/auc", "eval/model/psnr"]  # perf/* is not plotted
  loss = svgs[0]
  lines = re.findall(r'<polyline points="([^"]+)"', loss)
  assert [len(p.split()) for p in lines] == [STEPS, STEPS]
  psnr_lines = re.findall(r'<polyline points="([^"]+)"[^>]*?(stroke-dasharray)?[^>]*>', svgs[2])
  assert len(psnr_lines) == 4  # each run's model and gray baseline
  # y grows downwards in SVG: the first run's loss falls, so its y coordinates rise
  ys = [float(p.split(",")[1]) for p in lines[0].split()]
  assert ys == sorted(ys) and ys[0] < ys[-1]


def test_nice_ticks_and_empty_chart():
  assert report._nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
  for lo, hi in ((13, 97), (-0.0031, 0.0007), (0.8, 0.81), (1, 300000), (21.0, 21.0001)):
    ticks = report._nice_ticks(lo, hi)
    steps = np.diff(ticks)
    assert 2 <= len(ticks) <= 6 and lo <= ticks[0] and ticks[-1] <= hi
    np.testing.assert_allclose(steps, steps[0], rtol=1e-6)
    mantissa = steps[0] / 10 ** np.floor(np.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5)) < 1e-6
  assert report.svg_line_chart("x", [report.Series("a", [1.0], [float("nan")], "#000")]) == ""


@pytest.mark.parametrize("sizes", [[(32, 32)] * 3, [(24, 40)] * 2, [(32, 32), (20, 28), (32, 16)]])
def test_split_grid_inverts_image_grid(sizes):
  rng = np.random.default_rng(len(sizes))
  rows = [tuple(rng.integers(0, 250, (h, w, 3), dtype=np.uint8) for _ in range(3))
          for h, w in sizes]
  got = report.split_grid(metrics.image_grid(rows))
  assert len(got) == len(rows)
  for want_row, got_row in zip(rows, got):
    for want, image in zip(want_row, got_row):
      np.testing.assert_array_equal(image, want)


def test_bad_run_directories_are_named(tmp_path):
  with pytest.raises(ValueError, match="not a directory"):
    report.write_report([tmp_path / "nope"], tmp_path / "out")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="empty: no config.json"):
    report.write_report([tmp_path / "empty"], tmp_path / "out")
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "metrics.json").write_text("{not json")
  with pytest.raises(ValueError, match=r"broken/metrics.json: not a readable JSON"):
    report.write_report([tmp_path / "broken"], tmp_path / "out")


def test_game_pairs_from_a_colorize_folder(tmp_path, photos_dir):
  truth_dir, colorized_dir = tmp_path / "photos", tmp_path / "colorized"
  rows = photo_rows(photos_dir, 0, n=2)
  for i, (_, model, truth) in enumerate(rows):
    (truth_dir / "sub").mkdir(parents=True, exist_ok=True)
    (colorized_dir / "sub").mkdir(parents=True, exist_ok=True)
    Image.fromarray(truth).save(truth_dir / "sub" / f"p{i}.jpg", quality=95)
    Image.fromarray(model).save(colorized_dir / "sub" / f"p{i}.png")
  Image.fromarray(rows[0][1]).save(colorized_dir / "orphan.png")  # no truth: not a pair
  pairs = report.pairs_from_dirs(colorized_dir, truth_dir, label="eccv16")
  assert [p["source"] for p in pairs] == ["sub/p0", "sub/p1"]
  np.testing.assert_array_equal(pairs[1]["model"], rows[1][1])
  assert pairs[0]["run"] == "eccv16"


# ----------------------------------------------------------------------------------------------
# The pages in a real browser
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
  driver = conftest.chromium_driver("1100,900", 30)
  yield driver
  driver.quit()


def console_errors(driver) -> list[str]:
  return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_index_page_loads_cleanly(built, browser):
  browser.get((built["out"] / "index.html").as_uri())
  assert browser.title == "two runs"
  assert browser.execute_script(
      "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
  assert len(browser.find_elements("css selector", "svg.chart")) == 3
  assert console_errors(browser) == []


def test_game_page_tallies_clicks(built, browser):
  out = built["out"]
  browser.get((out / "game.html").as_uri())
  assert console_errors(browser) == []
  by = "css selector"
  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.keys import Keys
  # pylint: enable=g-import-not-at-top

  def tally():
    return {k: browser.find_element(by, f"#{k}").text for k in
            ("answered", "correct", "fooled", "fooling-rate")}

  data = json.loads(browser.execute_script(
      "return document.getElementById('game-data').textContent"))
  rounds = data["rounds"]
  assert len(rounds) == 6  # three rows of each run's latest grid
  # each round is a (model, truth) pair cut out of a grid, the truth at index `real`
  truths = [r[2] for run in built["runs"] for r in run["rows"]]
  models = [r[1] for run in built["runs"] for r in run["rows"]]
  for rnd in rounds:
    real = np.asarray(Image.open(out / rnd["images"][rnd["real"]]))
    fake = np.asarray(Image.open(out / rnd["images"][1 - rnd["real"]]))
    i = next(i for i, t in enumerate(truths) if np.array_equal(t, real))
    np.testing.assert_array_equal(fake, models[i])
    assert rnd["run"] == ("baseline" if i < 3 else "gan")

  assert tally() == {"answered": "0", "correct": "0", "fooled": "0", "fooling-rate": "—"}
  assert browser.execute_script(
      "return Array.from(document.querySelectorAll('.choice img'))"
      ".every(i => i.complete && i.naturalWidth > 0)")
  picks = []
  for round_index, side in enumerate((0, 1, 0)):
    shown = [browser.find_element(by, f"#image-{s}").get_attribute("src") for s in (0, 1)]
    if round_index < 2:
      browser.find_element(by, f"#choice-{side}").click()
    else:  # the keyboard works too
      ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    captions = [browser.find_element(by, f"#caption-{s}").text for s in (0, 1)]
    real_side = captions.index("Original photo")
    rnd = next(r for r in rounds if shown[0].endswith(r["images"][0]) or
               shown[0].endswith(r["images"][1]))
    # the page reveals the truth where the data says it is
    assert shown[real_side].endswith(rnd["images"][rnd["real"]])
    assert captions[1 - real_side] == f"Colorized by {rnd['run']}"
    picks.append((side == real_side, rnd["run"]))
    correct = sum(c for c, _ in picks)
    fooled = len(picks) - correct
    assert tally() == {"answered": str(len(picks)), "correct": str(correct),
                       "fooled": str(fooled),
                       "fooling-rate": f"{100 * fooled / len(picks):.1f} %"}
    browser.find_element(by, f"#choice-{1 - side}").click()  # a second click does not count
    assert tally()["answered"] == str(len(picks))
    browser.find_element(by, "#next").click()

  per_run = {tr.find_elements(by, "td")[0].text: tr.find_elements(by, "td")[1].text
             for tr in browser.find_elements(by, "#per-run tbody tr")}
  assert per_run == {run: str(sum(r == run for _, r in picks)) for _, run in picks}
  assert console_errors(browser) == []

  browser.refresh()  # the tally survives a reload; reset clears it
  assert tally()["answered"] == "3"
  browser.find_element(by, "#reset").click()
  assert tally()["answered"] == "0"
  assert console_errors(browser) == []


def test_game_without_pairs_says_so(tmp_path, browser):
  run = tmp_path / "fresh"
  run.mkdir()
  (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "train/loss": 2.0}) + "\n")
  index = report.write_report([run], tmp_path / "out")
  assert "no pairs" in index.read_text()
  browser.get((tmp_path / "out" / "game.html").as_uri())
  assert "No pairs to show" in browser.find_element("css selector", "#progress").text
  assert console_errors(browser) == []
