"""`colorjax report`: an HTML + Markdown comparison of runs, and a "which one is real?" game page.

  index = write_report(["workdir_a", "workdir_b"], "report/")   # -> report/index.html

What it reads from each run directory (all optional; a directory with none of them is an error):
  * `config.json` (written by `colorjax train`): the recipe summary (model, output, loss, GAN,
    crop size, batch, steps);
  * `metrics.jsonl` (JSON lines of `step`, `train/...`, `eval/model/...`, `eval/gray/...`):
    the training curves and, if no `metrics.json` is there, the final eval metrics (the training
    run's periodic eval: the 'center' protocol at `data.eval_size`);
  * `metrics.json` + `metrics.csv` (written by `colorjax eval --out DIR/metrics.json`): the final
    metrics with their protocol, and the per-image rows, grouped into a per-folder table by the
    first path component of each image's name (seed 000: "performance varies by category");
  * `samples/step_*.png`: gray | model | truth grids; the latest is shown.

What it writes into `out_dir`:
  * `index.html`: one page with inline CSS and inline SVG charts (no script, no network); images
    are relative files under `images/`;
  * `report.md`: the same tables in Markdown;
  * `game.html` (+ `game/`): seed 000's "which one is real?" game. Each round shows a colorized
    image and its ground truth side by side, in random order; the player clicks the one they think
    is the original, the page reveals the answer and tallies correct / fooled answers and the
    fooling rate, per run and overall. Pairs are cut out of the runs' latest sample grids, or
    taken from a `colorjax colorize` output folder and the folder it colorized (`game_dirs`).
    Plain JavaScript in the page, no network; the tally survives a reload (localStorage).
"""
from __future__ import annotations

import csv
import dataclasses
import html
import importlib.resources
import json
import math
import os
import pathlib
import random
import re
import shutil
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from colorjax import workdir


# Final-metric columns in display order: (key, label, which way is better, decimals).
SUMMARY_METRICS = (
    ("psnr", "PSNR (dB)", "↑", 2),
    ("ssim", "SSIM", "↑", 4),
    ("auc", "AuC", "↑", 4),
    ("auc_rebalanced", "AuC (rebal.)", "↑", 4),
    ("top1_bin_accuracy", "top-1 bin acc.", "↑", 4),
    ("colorfulness_gap", "colorfulness − truth", "→0", 2),
    ("fid", "FID", "↓", 2),
)
# Per-folder columns, from the per-image CSV of `colorjax eval`.
FOLDER_METRICS = (("psnr", "PSNR", 2), ("ssim", "SSIM", 4), ("auc", "AuC", 4),
                  ("colorfulness", "colorfulness", 2))
TOP_LEVEL_GROUP = "(top level)"
GAME_MAX_SIDE = 512
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
            "#e377c2")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ----------------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """Everything the report shows about one run directory."""
  path: pathlib.Path
  name: str
  config: dict[str, Any] | None = None
  history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  skipped_lines: int = 0
  eval_result: dict[str, Any] | None = None
  eval_rows: list[dict[str, str]] | None = None
  samples: pathlib.Path | None = None

  @property
  def last_step(self) -> int | None:
    steps = [r["step"] for r in self.history if isinstance(r.get("step"), (int, float))]
    return int(max(steps)) if steps else None

  def final_metrics(self) -> tuple[dict[str, dict[str, float]], str]:
    """({'model': {...}, 'gray': {...}}, where the numbers come from and their protocol)."""
    if self.eval_result is not None:
      r = self.eval_result
      sections = {s: dict(r[s]) for s in ("model", "gray") if isinstance(r.get(s), Mapping)}
      return sections, (f"colorjax eval, '{r.get('protocol', '?')}' protocol, "
                        f"{r.get('images', '?')} images")
    for row in reversed(self.history):
      if any(k.startswith("eval/model/") for k in row):
        sections = {s: {k[len(f"eval/{s}/"):]: v for k, v in row.items()
                        if k.startswith(f"eval/{s}/")} for s in ("model", "gray")}
        size = (self.config or {}).get("data", {}).get("eval_size")
        where = f"{size}x{size} center crops" if size else "center crops"
        return sections, f"training eval at step {row.get('step', '?')}, 'center' protocol, {where}"
    return {}, "no evaluation yet"

  def recipe(self) -> str:
    """One line that says what was trained, from config.json."""
    c = self.config
    if not c:
      return "(no config.json)"
    for key in ("name", "recipe"):
      if isinstance(c.get(key), str) and c[key]:
        return c[key]
    model, loss, data = c.get("model", {}), c.get("loss", {}), c.get("data", {})
    train, disc = c.get("train", {}), c.get("disc", {})
    parts = [f"{model.get('name', '?')} -> {model.get('output', '?')}",
             f"loss {loss.get('kind', '?')}"]
    if disc.get("enabled"):
      parts.append(f"+ {loss.get('gan', '?')} GAN")
    if model.get("semantic_backbone"):
      parts.append(f"semantic {model['semantic_backbone']}")
    parts.append(f"{data.get('crop_size', '?')} px, batch {train.get('batch_size', '?')}, "
                 f"{train.get('steps', '?')} steps")
    return ", ".join(parts)


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{path}: not a readable JSON file ({e})") from None


def _read_history(path: pathlib.Path) -> tuple[list[dict[str, Any]], int]:
  """Rows of metrics.jsonl; a line being written or otherwise unreadable is skipped and counted."""
  rows, skipped = [], 0
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        skipped += 1
        continue
      if isinstance(row, dict):
        rows.append(row)
      else:
        skipped += 1
  rows.sort(key=lambda r: r.get("step", 0) if isinstance(r.get("step"), (int, float)) else 0)
  return rows, skipped


def _latest_samples(run_dir: pathlib.Path) -> pathlib.Path | None:
  def step_of(p: pathlib.Path) -> int:
    m = re.fullmatch(r"step_(\d+)\.png", p.name)
    return int(m.group(1)) if m else -1
  grids = [p for p in run_dir.glob(workdir.SAMPLES_GLOB) if step_of(p) >= 0]
  return max(grids, key=step_of) if grids else None


def load_run(run_dir: str | os.PathLike, name: str | None = None) -> Run:
  """Reads what the report needs from a training workdir or an eval output directory.

  Raises:
    ValueError: the directory is missing, holds none of the files a run has, or one of its JSON
      files is unreadable (naming the file).
  """
  path = pathlib.Path(run_dir)
  if not path.is_dir():
    raise ValueError(f"{path}: not a directory")
  run = Run(path=path, name=name or path.resolve().name)
  if (path / workdir.CONFIG_FILE).is_file():
    run.config = _read_json(path / workdir.CONFIG_FILE)
    if not isinstance(run.config, dict):
      raise ValueError(f"{path / workdir.CONFIG_FILE}: expected a JSON object")
  if (path / workdir.METRICS_JSONL).is_file():
    run.history, run.skipped_lines = _read_history(path / workdir.METRICS_JSONL)
  if (path / workdir.EVAL_JSON).is_file():
    run.eval_result = _read_json(path / workdir.EVAL_JSON)
    if not isinstance(run.eval_result, dict):
      raise ValueError(
          f"{path / workdir.EVAL_JSON}: expected the JSON object `colorjax eval` writes")
  if (path / workdir.EVAL_CSV).is_file():
    with open(path / workdir.EVAL_CSV, newline="", encoding="utf-8") as f:
      run.eval_rows = list(csv.DictReader(f))
    if run.eval_rows and "image" not in run.eval_rows[0]:
      raise ValueError(f"{path / workdir.EVAL_CSV}: no 'image' column; expected the per-image "
                       "CSV of `colorjax eval`")
  run.samples = _latest_samples(path)
  if (run.config is None and not run.history and run.eval_result is None
      and run.eval_rows is None and run.samples is None):
    raise ValueError(f"{path}: no {workdir.CONFIG_FILE}, {workdir.METRICS_JSONL}, "
                     f"{workdir.EVAL_JSON}, {workdir.EVAL_CSV} or "
                     f"{workdir.SAMPLES_GLOB}: not a colorjax training or eval directory")
  return run


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _fmt(value: Any, decimals: int) -> str:
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    return "—"
  if math.isnan(value):
    return "nan"
  if math.isinf(value):
    return "inf" if value > 0 else "-inf"
  return f"{value:.{decimals}f}"


def _fmt_delta(value: Any, decimals: int) -> str:
  text = _fmt(value, decimals)
  return "+" + text if isinstance(value, (int, float)) and value > 0 and math.isfinite(value) \
      else text


def summary_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
  """Header and rows of the comparison table: per metric, model, gray and model - gray."""
  present = [m for m in SUMMARY_METRICS
             if any(m[0] in run.final_metrics()[0].get("model", {}) for run in runs)]
  header = ["run", "recipe", "steps", "evaluated on"]
  for _, label, better, _ in present:
    header += [f"{label} {better}", "gray", "Δ"]
  rows = []
  for run in runs:
    sections, source = run.final_metrics()
    model, gray = sections.get("model", {}), sections.get("gray", {})
    row = [run.name, run.recipe(), _fmt(run.last_step, 0), source]
    for key, _, _, decimals in present:
      m, g = model.get(key), gray.get(key)
      delta = m - g if isinstance(m, (int, float)) and isinstance(g, (int, float)) else None
      row += [_fmt(m, decimals), _fmt(g, decimals), _fmt_delta(delta, decimals)]
    rows.append(row)
  return header, rows


def folder_of(image_name: str) -> str:
  """The first path component of an image's relative name (its folder / class)."""
  parts = [p for p in re.split(r"[\\/]", image_name) if p not in ("", ".")]
  return parts[0] if len(parts) > 1 else TOP_LEVEL_GROUP


def folder_breakdown(eval_rows: Sequence[Mapping[str, str]]
                     ) -> tuple[list[str], list[list[str]]]:
  """Header and rows of per-folder means (model, model - gray) plus an 'all images' row."""
  keys = [m for m in FOLDER_METRICS if eval_rows and f"model/{m[0]}" in eval_rows[0]]
  groups: dict[str, list[Mapping[str, str]]] = {}
  for row in eval_rows:
    groups.setdefault(folder_of(row["image"]), []).append(row)

  def mean(rows, column):
    values = []
    for r in rows:
      try:
        values.append(float(r[column]))
      except (KeyError, TypeError, ValueError):
        pass
    return float(np.mean(values)) if values else None

  header = ["folder", "images"]
  for _, label, _ in keys:
    header += [label, "Δ vs gray"]
  out = []
  for name, rows in sorted(groups.items()) + [("all images", list(eval_rows))]:
    line = [name, str(len(rows))]
    for key, _, decimals in keys:
      m, g = mean(rows, f"model/{key}"), mean(rows, f"gray/{key}")
      line += [_fmt(m, decimals), _fmt_delta(None if m is None or g is None else m - g, decimals)]
    out.append(line)
  return header, out


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(cell(h) for h in header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], css_class: str = "") -> str:
  head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                 for row in rows)
  cls = f' class="{css_class}"' if css_class else ""
  return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ----------------------------------------------------------------------------------------------
# Charts (inline SVG, no plotting library)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Series:
  label: str
  steps: list[float]
  values: list[float]
  color: str
  dashed: bool = False


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
  if hi <= lo:
    return [lo]
  raw = (hi - lo) / max(count - 1, 1)
  magnitude = 10 ** math.floor(math.log10(raw))
  step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  ticks = []
  t = first
  while t <= hi + 1e-9 * step:
    ticks.append(round(t, 12))
    t += step
  return ticks


def _tick_label(value: float) -> str:
  if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
    return f"{value:.1e}"
  return f"{value:.6g}"


def svg_line_chart(title: str, series: Sequence[Series], width: int = 440,
                   height: int = 230) -> str:
  """An inline `<svg>` line chart of several (step, value) series; non-finite values break the
  line. Returns '' when no series has a finite point."""
  points = [(x, y) for s in series for x, y in zip(s.steps, s.values)
            if math.isfinite(x) and math.isfinite(y)]
  if not points:
    return ""
  left, right, top, bottom = 58, 12, 26, 30
  legend_h = 14 * len(series) + 4
  height += legend_h
  bottom += legend_h
  xs, ys = [p[0] for p in points], [p[1] for p in points]
  x_lo, x_hi = min(xs), max(xs)
  y_lo, y_hi = min(ys), max(ys)
  if x_hi == x_lo:
    x_lo, x_hi = x_lo - 1, x_hi + 1
  if y_hi == y_lo:
    pad = abs(y_lo) * 0.05 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
  else:
    pad = (y_hi - y_lo) * 0.05
    y_lo, y_hi = y_lo - pad, y_hi + pad
  plot_w, plot_h = width - left - right, height - top - bottom

  def px(x):
    return left + (x - x_lo) / (x_hi - x_lo) * plot_w

  def py(y):
    return top + (y_hi - y) / (y_hi - y_lo) * plot_h

  out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
         f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
         f"<title>{html.escape(title)}</title>",
         f'<text x="{left}" y="16" class="chart-title">{html.escape(title)}</text>',
         f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="plot-area"/>']
  for t in _nice_ticks(y_lo, y_hi):
    y = py(t)
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
    out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
               f"{_tick_label(t)}</text>")
  for t in _nice_ticks(x_lo, x_hi):
    x = px(t)
    out.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" class="tick" text-anchor="middle">'
               f"{_tick_label(t)}</text>")
  out.append(f'<text x="{left + plot_w}" y="{top + plot_h + 28}" class="tick" '
             'text-anchor="end">step</text>')
  for s in series:
    dash = ' stroke-dasharray="5,4"' if s.dashed else ""
    segment: list[str] = []
    segments = []
    for x, y in zip(s.steps, s.values):
      if math.isfinite(x) and math.isfinite(y):
        segment.append(f"{px(x):.1f},{py(y):.1f}")
      elif segment:
        segments.append(segment)
        segment = []
    if segment:
      segments.append(segment)
    for seg in segments:
      if len(seg) == 1:
        cx, cy = seg[0].split(",")
        out.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{s.color}"/>')
      else:
        out.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{s.color}" '
                   f'stroke-width="1.6"{dash}><title>{html.escape(s.label)}</title></polyline>')
  legend_y = top + plot_h + 36
  for s in series:
    dash = ' stroke-dasharray="5,4"' if s.dashed else ""
    out.append(f'<line x1="{left}" x2="{left + 18}" y1="{legend_y - 4}" y2="{legend_y - 4}" '
               f'stroke="{s.color}" stroke-width="2"{dash}/>')
    out.append(f'<text x="{left + 24}" y="{legend_y}" class="legend">'
               f"{html.escape(s.label)}</text>")
    legend_y += 14
  out.append("</svg>")
  return "\n".join(out)


def _curve(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
  steps, values = [], []
  for row in history:
    v, s = row.get(key), row.get("step")
    if isinstance(s, (int, float)) and isinstance(v, (int, float)) and not isinstance(v, bool):
      steps.append(float(s))
      values.append(float(v))
  return steps, values


def curve_keys(runs: Sequence[Run]) -> list[str]:
  """The logged scalars worth a chart: every train/* key, then eval/model/* keys."""
  keys: list[str] = []
  for run in runs:
    for row in run.history:
      for k, v in row.items():
        if (k.startswith("train/") or k.startswith("eval/model/")) and k not in keys and \
            isinstance(v, (int, float)) and not isinstance(v, bool):
          keys.append(k)
  return sorted(keys, key=lambda k: (not k.startswith("train/"), k))


def charts(runs: Sequence[Run]) -> list[str]:
  """One SVG per logged scalar, one line per run; eval charts add each run's gray baseline."""
  out = []
  for key in curve_keys(runs):
    series = []
    for i, run in enumerate(runs):
      color = _PALETTE[i % len(_PALETTE)]
      steps, values = _curve(run.history, key)
      if steps:
        series.append(Series(run.name, steps, values, color))
      if key.startswith("eval/model/"):
        steps, values = _curve(run.history, "eval/gray/" + key[len("eval/model/"):])
        if steps:
          series.append(Series(f"{run.name} (gray)", steps, values, color, dashed=True))
    svg = svg_line_chart(key, series)
    if svg:
      out.append(svg)
  return out


# ----------------------------------------------------------------------------------------------
# Sample grids and game pairs
# ----------------------------------------------------------------------------------------------


def _is_white(block: np.ndarray, value: int) -> bool:
  return bool(block.size) and bool(np.all(block == value))


def _split_row(band: np.ndarray, sep: int, value: int) -> tuple | None:
  """(gray, model, truth) of one grid row, its panels w wide: [w | sep | w | sep | w | pad]."""
  width = band.shape[1]
  for w in range((width - 2 * sep) // 3, 0, -1):
    s1, s2, end = w, 2 * w + sep, 3 * w + 2 * sep
    if (_is_white(band[:, s1:s1 + sep], value) and _is_white(band[:, s2:s2 + sep], value)
        and (end == width or _is_white(band[:, end:], value))):
      return band[:, :w], band[:, w + sep:2 * w + sep], band[:, 2 * w + 2 * sep:end]
  return None


def split_grid(grid_HW3: np.ndarray, separator_px: int = 2,
               separator_value: int = 255) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """The (gray, model, truth) images of a `metrics.image_grid` PNG (the inverse of that layout).

  The grids written during training have rows of equal square panels, which are cut exactly.
  Otherwise rows are found as bands between all-white separator lines and each row's panel
  width is the widest one whose separator columns (and right padding) are white, so a photo
  with a white line or white borders may be cut wrongly or skipped.
  """
  grid = np.asarray(grid_HW3)
  if grid.ndim != 3 or grid.shape[-1] < 3:
    raise ValueError(f"split_grid: expected an RGB image (H, W, 3), got {grid.shape}")
  grid = grid[..., :3]
  height, width = grid.shape[:2]
  sep, value = separator_px, separator_value
  panel = (width - 2 * sep) // 3
  if panel > 0 and 3 * panel + 2 * sep == width and (height + sep) % (panel + sep) == 0:
    n = (height + sep) // (panel + sep)
    tops = [r * (panel + sep) for r in range(n)]
    separators_white = all(_is_white(grid[t + panel:t + panel + sep], value) for t in tops[:-1])
    rows = [_split_row(grid[t:t + panel], sep, value) for t in tops]
    if separators_white and all(r is not None and r[0].shape[1] == panel for r in rows):
      return rows
  white_line = np.all(grid == value, axis=(1, 2))
  bands, start = [], None
  for y, white in enumerate(list(white_line) + [True]):
    if not white and start is None:
      start = y
    elif white and start is not None:
      bands.append((start, y))
      start = None
  rows = [_split_row(grid[a:b], sep, value) for a, b in bands]
  return [r for r in rows if r is not None]


def _fit(image: np.ndarray, max_side: int) -> Image.Image:
  im = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8), "RGB")
  scale = max_side / max(im.size)
  if scale < 1:
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.LANCZOS)
  return im


def _read_rgb(path: pathlib.Path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


def pairs_from_grids(runs: Sequence[Run]) -> list[dict[str, Any]]:
  """(model, truth) pairs cut out of each run's latest sample grid."""
  pairs = []
  for run in runs:
    if run.samples is None:
      continue
    for i, (_, model, truth) in enumerate(split_grid(_read_rgb(run.samples))):
      pairs.append({"run": run.name, "source": f"{run.samples.name} row {i + 1}",
                    "model": model, "truth": truth})
  return pairs


def pairs_from_dirs(colorized_dir: str | os.PathLike, truth_dir: str | os.PathLike,
                    label: str | None = None) -> list[dict[str, Any]]:
  """(model, truth) pairs from a `colorjax colorize` output folder and the folder it colorized:
  `colorized_dir/<rel>.png` is matched with `truth_dir/<rel>.<any image suffix>`."""
  colorized_dir, truth_dir = pathlib.Path(colorized_dir), pathlib.Path(truth_dir)
  for d in (colorized_dir, truth_dir):
    if not d.is_dir():
      raise ValueError(f"{d}: not a directory")
  truths = {p.relative_to(truth_dir).with_suffix("").as_posix(): p
            for p in sorted(truth_dir.rglob("*")) if p.suffix.lower() in _IMAGE_SUFFIXES}
  pairs = []
  for path in sorted(colorized_dir.rglob("*.png")):
    rel = path.relative_to(colorized_dir).with_suffix("").as_posix()
    if rel not in truths:
      continue
    try:
      model, truth = _read_rgb(path), _read_rgb(truths[rel])
    except OSError:
      continue
    if model.shape != truth.shape:
      continue
    pairs.append({"run": label or colorized_dir.name, "source": rel, "model": model,
                  "truth": truth})
  return pairs


# ----------------------------------------------------------------------------------------------
# Pages
# ----------------------------------------------------------------------------------------------


def _asset(name: str) -> str:
  try:
    return (importlib.resources.files("colorjax") / "assets" / "report" / name).read_text(
        encoding="utf-8")
  except (FileNotFoundError, OSError) as e:
    raise FileNotFoundError(f"colorjax/assets/report/{name} is missing from the installation "
                            f"({e})") from None


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def _unique_names(paths: Sequence[pathlib.Path]) -> list[str]:
  names, seen = [], {}
  for p in paths:
    base = p.resolve().name or str(p)
    seen[base] = seen.get(base, 0) + 1
    names.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
  return names


def _page(title: str, body: str, *, script: str = "") -> str:
  return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          '<link rel="icon" href="data:,">\n'
          f"<title>{html.escape(title)}</title>\n<style>\n{_asset('report.css')}</style>\n"
          f"</head>\n<body>\n{body}\n{script}</body>\n</html>\n")


def _run_section(run: Run, image_rel: str | None) -> tuple[str, str]:
  """(HTML, Markdown) of one run: recipe, final metrics vs gray, samples, per-folder table."""
  sections, source = run.final_metrics()
  model, gray = sections.get("model", {}), sections.get("gray", {})
  h = [f'<section class="run"><h2>{html.escape(run.name)}</h2>',
       f'<p class="meta"><b>recipe</b> {html.escape(run.recipe())} · <b>steps</b> '
       f"{_fmt(run.last_step, 0)} · <b>directory</b> <code>{html.escape(str(run.path))}</code>"
       "</p>"]
  md = [f"## {run.name}", "", f"- recipe: {run.recipe()}", f"- steps: {_fmt(run.last_step, 0)}",
        f"- metrics: {source}"]
  if run.skipped_lines:
    note = f"{run.skipped_lines} unreadable line(s) of {workdir.METRICS_JSONL} skipped"
    h.append(f'<p class="note">{html.escape(note)}</p>')
    md.append(f"- note: {note}")
  rows = []
  for key, label, better, decimals in SUMMARY_METRICS:
    if key not in model:
      continue
    m, g = model.get(key), gray.get(key)
    delta = m - g if isinstance(m, (int, float)) and isinstance(g, (int, float)) else None
    rows.append([f"{label} {better}", _fmt(m, decimals), _fmt(g, decimals),
                 _fmt_delta(delta, decimals)])
  if rows:
    header = ["metric", "model", "gray (ab = 0)", "model − gray"]
    h.append(f"<p>Final metrics: {html.escape(source)}.</p>" + _html_table(header, rows))
    md += ["", _markdown_table(header, rows)]
  else:
    h.append("<p>No evaluation metrics yet.</p>")
  if image_rel is not None:
    with Image.open(run.samples) as im:
      display_w = min(900, max(im.width, 600))
    h.append(f'<figure><img src="{html.escape(image_rel)}" width="{display_w}" alt="samples of '
             f'{html.escape(run.name)}"><figcaption>{html.escape(run.samples.name)}: '
             "gray | model | truth</figcaption></figure>")
    md += ["", f"![samples of {run.name}: gray | model | truth]({image_rel})"]
  if run.eval_rows:
    header, rows = folder_breakdown(run.eval_rows)
    h.append("<h3>Per folder</h3>" + _html_table(header, rows, "folders"))
    md += ["", "### Per folder", "", _markdown_table(header, rows)]
  h.append("</section>")
  return "\n".join(h), "\n".join(md)


def _write_game(out_dir: pathlib.Path, pairs: Sequence[Mapping[str, Any]], title: str,
                rounds: int, seed: int) -> pathlib.Path:
  game_dir = out_dir / "game"
  game_dir.mkdir(parents=True, exist_ok=True)
  for old in game_dir.glob("*.png"):
    if re.fullmatch(r"\d{3}-[01]\.png", old.name):  # only what an earlier report wrote
      old.unlink()
  rng = random.Random(seed)
  chosen = rng.sample(list(pairs), min(rounds, len(pairs)))
  data = []
  for i, pair in enumerate(chosen):
    # Which file holds the truth is random too, so file names give nothing away.
    real = rng.randrange(2)
    images = [pair["model"], pair["model"]]
    images[real] = pair["truth"]
    names = []
    for j, image in enumerate(images):
      name = f"game/{i:03d}-{j}.png"
      _fit(image, GAME_MAX_SIDE).save(out_dir / name)
      names.append(name)
    data.append({"images": names, "real": real, "run": pair["run"], "source": pair["source"]})
  payload = json.dumps({"title": title, "rounds": data}).replace("</", "<\\/")
  body = f"""<main class="game">
<h1>Which one is real?</h1>
<p class="lede">One of the two pictures is the original photo, the other was colorized by a model
from its gray version. Click the one you think is the original
(or press <kbd>←</kbd> / <kbd>→</kbd>).</p>
<p id="progress" class="progress"></p>
<div id="pair" class="pair">
  <figure><button type="button" class="choice" id="choice-0" data-side="0">
    <img id="image-0" alt="left picture"></button><figcaption id="caption-0"></figcaption></figure>
  <figure><button type="button" class="choice" id="choice-1" data-side="1">
    <img id="image-1" alt="right picture"></button><figcaption id="caption-1"></figcaption></figure>
</div>
<p id="verdict" class="verdict" aria-live="polite"></p>
<p class="controls"><button type="button" id="next" disabled>Next pair</button>
<button type="button" id="reset">Reset tally</button></p>
<section class="tally"><h2>Tally</h2>
<p>answered <b id="answered">0</b> · correct <b id="correct">0</b> · fooled <b id="fooled">0</b>
· fooling rate <b id="fooling-rate">—</b></p>
<table id="per-run"><thead><tr><th>model</th><th>answered</th><th>fooled</th>
<th>fooling rate</th></tr></thead><tbody></tbody></table>
</section>
<p class="back"><a href="index.html">back to the report</a></p>
</main>
<script type="application/json" id="game-data">{payload}</script>
"""
  script = f"<script>\n{_asset('game.js')}</script>\n"
  path = out_dir / "game.html"
  path.write_text(_page(f"{title}: which one is real?", body, script=script), encoding="utf-8")
  return path


def write_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                 title: str | None = None,
                 game_dirs: Sequence[tuple[str | os.PathLike, str | os.PathLike]] = (),
                 game_rounds: int = 30, seed: int = 0) -> pathlib.Path:
  """Writes `index.html`, `report.md` and `game.html` comparing `run_dirs` into `out_dir`.

  Args:
    run_dirs: training workdirs and/or `colorjax eval` output directories (see the module
      docstring for the files read).
    out_dir: created if needed; images go to `out_dir/images/` and `out_dir/game/`.
    title: page title (default: "colorjax report: <run names>").
    game_dirs: extra game pairs, as (colorize output folder, the folder it colorized) pairs.
    game_rounds: at most this many pairs are put in the game (a random choice, `seed`).

  Returns:
    The path of `index.html`.
  """
  if not run_dirs:
    raise ValueError("write_report: give at least one run directory")
  paths = [pathlib.Path(p) for p in run_dirs]
  runs = [load_run(p, name) for p, name in zip(paths, _unique_names(paths))]
  out = pathlib.Path(out_dir)
  (out / "images").mkdir(parents=True, exist_ok=True)
  title = title or "colorjax report: " + ", ".join(r.name for r in runs)

  header, rows = summary_rows(runs)
  run_html, run_md = [], []
  for run in runs:
    image_rel = None
    if run.samples is not None:
      image_rel = f"images/{_slug(run.name)}-{run.samples.name}"
      shutil.copyfile(run.samples, out / image_rel)
    h, m = _run_section(run, image_rel)
    run_html.append(h)
    run_md.append(m)
  svgs = charts(runs)

  pairs = pairs_from_grids(runs)
  for colorized_dir, truth_dir in game_dirs:
    pairs += pairs_from_dirs(colorized_dir, truth_dir)
  _write_game(out, pairs, title, game_rounds, seed)
  game_note = (f"{min(game_rounds, len(pairs))} pairs" if pairs
               else "no pairs: the runs have no sample grids yet")

  body = [f"<main><h1>{html.escape(title)}</h1>",
          '<p class="links"><a href="game.html">Which one is real? (the game)</a> · '
          f'<a href="report.md">report.md</a> · game: {html.escape(game_note)}</p>',
          "<h2>Comparison</h2>",
          "<p>Each metric of the model beside the trivial gray baseline (the input lightness "
          "with ab = 0) on the same images, and their difference Δ = model − gray. "
          "Numbers are comparable only between runs evaluated on the same images with the same "
          "protocol (column “evaluated on”).</p>",
          _html_table(header, rows, "summary")]
  if svgs:
    body += ["<h2>Training curves</h2>",
             "<p>Solid: the model; dashed: the gray baseline of the same run's eval set.</p>",
             '<div class="charts">' + "\n".join(svgs) + "</div>"]
  body += run_html + ["</main>"]
  index = out / "index.html"
  index.write_text(_page(title, "\n".join(body)), encoding="utf-8")

  md = [f"# {title}", "", "Model vs the gray baseline (ab = 0) on the same images; "
        "Δ = model − gray.", "", _markdown_table(header, rows), "",
        "Which one is real? Open [game.html](game.html) in a browser.", ""]
  md += ["\n".join([m, ""]) for m in run_md]
  (out / "report.md").write_text("\n".join(md), encoding="utf-8")
  return index
