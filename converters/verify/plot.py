"""The per-layer error as pictures, next to the table: a PNG and a self-contained HTML page.

People would rather look than read: one horizontal bar per layer, in the table's order (worst
first), the bar's length the layer's own SQNR (dB; the layer alone with exact inputs: short bars are the layers that
add error), its colour the band it falls in, and a tick at the output SQNR (the error accumulated
up to there). The HTML is one file (inline SVG, no scripts, no links: it opens offline and can be
attached to a ticket); each bar's tooltip has every number of the row. The PNG uses Pillow (the
``host`` extra already needs it for image calibration folders).
"""
from __future__ import annotations

import html
from pathlib import Path

from converters.verify.metrics import SQNR_CAP

ROW, LABEL_W, BAR_W, PAD = 18, 260, 480, 10
BANDS = ((20.0, "#d62728", "< 20 dB: the layer loses the signal"), (30.0, "#ff7f0e", "20-30 dB: visible error"),
         (float("inf"), "#2ca02c", ">= 30 dB: fine"))


def write(report, prefix: str | Path) -> list[Path]:
    """Write ``PREFIX.png`` and ``PREFIX.html`` for a report with per-layer rows; returns both paths."""
    rows = list(report.per_layer or [])
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    png, page = prefix.with_suffix(".png"), prefix.with_suffix(".html")
    _png(rows, png)
    page.write_text(_html(rows, report), encoding="utf-8")
    return [png, page]


def _scale(rows) -> float:
    """dB at the right edge: the largest finite own/output SQNR, capped (an exact layer is SQNR_CAP)."""
    top = max([min(v, 60.0) for r in rows for v in (r.own_sqnr_db, r.sqnr_db)] + [40.0])
    return min(top, SQNR_CAP)


def _colour(db: float) -> str:
    return next(colour for limit, colour, _ in BANDS if db < limit)


def _bars(rows):
    """(row, label, own bar length px, output tick px, colour) per row, in the table's order."""
    scale = _scale(rows)
    for r in rows:
        own = max(0.0, min(r.own_sqnr_db, scale)) / scale * BAR_W
        out = max(0.0, min(r.sqnr_db, scale)) / scale * BAR_W
        yield r, f"{r.node} ({r.op})", own, out, _colour(r.own_sqnr_db)


def _png(rows, path: Path) -> None:
    from PIL import Image, ImageDraw      # the host extra: only `verify --plot` needs it here
    height = PAD * 3 + ROW * (len(rows) + 2)
    img = Image.new("RGB", (LABEL_W + BAR_W + PAD * 3, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((PAD, PAD), f"own SQNR per layer, dB (bar); output SQNR (tick); right edge {_scale(rows):.0f} dB",
              fill="black")
    for i, (r, label, own, out, colour) in enumerate(_bars(rows)):
        y = PAD * 2 + ROW * (i + 1)
        draw.text((PAD, y + 3), label[:40], fill="black")
        draw.rectangle((LABEL_W, y + 3, LABEL_W + max(own, 1), y + ROW - 3), fill=colour)
        draw.line((LABEL_W + out, y + 1, LABEL_W + out, y + ROW - 1), fill="black", width=2)
        draw.text((LABEL_W + BAR_W + PAD - 40, y + 3), f"{r.own_sqnr_db:.1f}", fill="black")
    img.save(path, format="PNG")


def _html(rows, report) -> str:
    height = ROW * (len(rows) + 1) + PAD
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + BAR_W + 80}" height="{height}" '
             'font-family="monospace" font-size="12">']
    for i, (r, label, own, out, colour) in enumerate(_bars(rows)):
        y = ROW * i + PAD
        tip = html.escape(f"{label}: own SQNR {r.own_sqnr_db:.2f} dB, output SQNR {r.sqnr_db:.2f} dB, "
                          f"input SQNR {r.input_sqnr_db:.2f} dB, cosine {r.cosine:.5f}, max abs {r.max_abs:.4g}")
        parts += [f'<g><title>{tip}</title>',
                  f'<text x="0" y="{y + 12}">{html.escape(label[:36])}</text>',
                  f'<rect x="{LABEL_W}" y="{y + 3}" width="{max(own, 1):.1f}" height="{ROW - 6}" fill="{colour}"/>',
                  f'<line x1="{LABEL_W + out:.1f}" x2="{LABEL_W + out:.1f}" y1="{y + 1}" y2="{y + ROW - 1}" '
                  'stroke="black" stroke-width="2"/>',
                  f'<text x="{LABEL_W + BAR_W + 8}" y="{y + 12}">{r.own_sqnr_db:.1f}</text></g>']
    parts.append("</svg>")
    legend = "".join(f'<li><span style="color:{c}">&#9632;</span> {html.escape(t)}</li>' for _, c, t in BANDS)
    summary = ", ".join(f"{html.escape(name)}: SQNR {m['sqnr_db']:.2f} dB" for name, m in report.outputs.items())
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>ganglion verify: per-layer error</title>"
            "<style>body{font-family:sans-serif;margin:1em}li{list-style:none}</style></head><body>"
            f"<h1>Per-layer error ({html.escape(report.candidate)}, {report.samples} samples)</h1>"
            f"<p>{summary}. Bar: the layer's own SQNR (exact inputs); tick: the output SQNR up to it. "
            "Hover a bar for its numbers.</p>"
            f"<ul>{legend}</ul>{''.join(parts)}</body></html>\n")
