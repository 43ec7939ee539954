"""A small line plot drawn with Pillow (no plotting library needed): metric against NFE.

One polyline per series on a log-scaled x axis, ticks at the x values that occur, five linear
y ticks, optional horizontal reference lines, and a legend.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127))  # fmt: skip
SIZE = (720, 440)
MARGIN = (70, 30, 190, 50)  # left, top, right, bottom


def _mapper(lo: float, hi: float, a: float, b: float, log: bool):
    """Affine map of [lo, hi] (log-scaled when `log`) onto pixel range [a, b]."""
    f = math.log if log else float
    lo_f, hi_f = f(lo), f(hi)
    span = (hi_f - lo_f) or 1.0
    return lambda v: a + (f(v) - lo_f) / span * (b - a)


def _axes(draw, xs, y_lo, y_hi, to_x, to_y, labels):
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    last = -math.inf
    for x in xs:
        px = to_x(x)
        draw.line((px, bottom, px, bottom + 4), fill=(0, 0, 0))
        if px - last >= 28:  # labels of crowded ticks would overlap
            draw.text((px - 8, bottom + 6), f"{x:g}", fill=(0, 0, 0))
            last = px
    for i in range(5):
        y = y_lo + (y_hi - y_lo) * i / 4
        py = to_y(y)
        draw.line((left - 4, py, left, py), fill=(0, 0, 0))
        draw.line((left, py, right, py), fill=(230, 230, 230))
        draw.text((4, py - 6), f"{y:.4g}", fill=(0, 0, 0))
    draw.text(((left + right) // 2 - 60, SIZE[1] - 18), labels[0], fill=(0, 0, 0))
    draw.text((left, 8), labels[1], fill=(0, 0, 0))


def save_line_plot(
    series: dict[str, list[tuple[float, float]]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    hlines: dict[str, float] | None = None,
) -> Path:
    """Writes a PNG of each series' (x, y) points (x > 0, log axis) to `path`."""
    hlines = hlines or {}
    points = [p for pts in series.values() for p in pts]
    if not points:
        raise ValueError("save_line_plot: nothing to plot")
    xs = sorted({x for x, _ in points})
    ys = [y for _, y in points] + list(hlines.values())
    y_lo, y_hi = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
    left, top, right, bottom = MARGIN[0], MARGIN[1], SIZE[0] - MARGIN[2], SIZE[1] - MARGIN[3]
    to_x = _mapper(xs[0], xs[-1], left + 10, right - 10, log=xs[0] > 0)
    to_y = _mapper(y_lo, y_hi, bottom, top, log=False)
    image = Image.new("RGB", SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    _axes(draw, xs, y_lo, y_hi, to_x, to_y, (xlabel, ylabel))
    entries = [(name, pts, COLORS[i % len(COLORS)]) for i, (name, pts) in enumerate(series.items())]
    for name, y in hlines.items():
        draw.line((left, to_y(y), right, to_y(y)), fill=(90, 90, 90), width=1)
        draw.text((left + 4, to_y(y) - 12), name, fill=(90, 90, 90))
    for i, (name, pts, color) in enumerate(entries):
        pixels = [(to_x(x), to_y(y)) for x, y in sorted(pts)]
        if len(pixels) > 1:
            draw.line(pixels, fill=color, width=2)
        for px, py in pixels:
            draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=color)
        legend_y = top + 6 + 16 * i
        draw.line((right + 12, legend_y + 6, right + 32, legend_y + 6), fill=color, width=3)
        draw.text((right + 38, legend_y), name, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
