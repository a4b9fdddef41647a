"""A one-file HTML page of the demo's results: query, top results marked hit/miss, ground truth.

Thumbnails are small JPEGs embedded as base64 data URIs, so the page has no external
references: it works opened straight from disk, mailed, or moved elsewhere.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image

from sisyphus_db.evaluate.demo import DemoReport

THUMB_WIDTH = 224


def thumbnail_data_uri(path: str | Path, width: int = THUMB_WIDTH) -> str:
    """A small JPEG of the image as a data: URI (an empty string when the file is gone)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except OSError:
        return ""
    height = max(1, round(rgb.height * width / rgb.width))
    buffer = io.BytesIO()
    rgb.resize((width, height), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px}
h1{margin-bottom:.2em} .figures td{padding:.2em 1em .2em 0}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;padding:6px;border:4px solid #ccc;border-radius:6px;width:224px}
figure.hit{border-color:#2a9d4b} figure.miss{border-color:#d33} figure.query{border-color:#246}
figure img{display:block;width:224px} figcaption{font-size:.85em;margin-top:4px}
.timeline{position:relative;height:34px;background:#eee;border-radius:4px;margin:1em 0 .3em}
.truth{position:absolute;top:0;height:100%;background:#f90;opacity:.75}
.mark{position:absolute;top:4px;width:2px;height:26px}
.mark.hit{background:#2a9d4b} .mark.miss{background:#d33} .mark.query{background:#246;width:4px}
.legend span{margin-right:1.5em} small{color:#666}
"""


def write_demo_html(report: DemoReport, out: Path) -> Path:
    """Write the page to `out` (a file path) and return it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    main = report.main_review
    length = max(report.duration_s, 1.0)

    def left(seconds: float) -> str:
        return f"{100.0 * seconds / length:.3f}%"

    truth_bars = "".join(
        f'<div class="truth" style="left:{left(start)};width:{100.0 * (end - start) / length:.3f}%" '
        f'title="road works {start:.1f}-{end:.1f} s"></div>' for start, end in report.intervals)
    marks = "".join(
        f'<div class="mark {"hit" if hit.hit else "miss"}" style="left:{left(hit.pts_seconds)}" '
        f'title="#{hit.rank} at {hit.pts_seconds:.1f} s"></div>' for hit in report.hits)
    marks += f'<div class="mark query" style="left:{left(float(report.query["pts_seconds"]))}" title="query"></div>'

    results = "".join(
        f'<figure class="{"hit" if hit.hit else "miss"}"><img alt="result {hit.rank}" '
        f'src="{thumbnail_data_uri(hit.path)}"><figcaption>#{hit.rank} {"HIT" if hit.hit else "miss"} - '
        f'{hit.pts_seconds:.1f} s<br><small>distance {hit.distance:.4f}, frame {hit.frame_id}</small>'
        f'</figcaption></figure>' for hit in report.hits)
    speedup = _times(main["speedup"])
    with_tool = "not reached" if main["with_tool"] is None else str(main["with_tool"])
    rows = [
        ("key frames in the drive", f"{report.frames} ({report.keyframe_fps:g} per second)"),
        ("frames showing road works (ground truth)", f"{report.blockage_frames} (base rate "
                                                     f"{100 * report.base_rate:.1f}%)"),
        (f"precision@{report.k}", f"{report.precision_at_k:.2f} ({report.lift:.1f}x chance)"),
        (f"recall@{report.k} of the road-works frames", f"{report.recall_at_k:.2f}"),
        (f"road-works intervals hit in the top {report.k}", f"{report.intervals_found} of {len(report.intervals)}"),
        (f"frames to review to find {main['find']} road-works frames", f"{with_tool} with the tool, "
         f"{main['without_tool']:.0f} expected without (speed-up {speedup})"),
        ("model", html.escape(report.model)),
    ]
    figures = "".join(f"<tr><td>{html.escape(name)}</td><td><b>{value}</b></td></tr>" for name, value in rows)
    review = "".join(
        f"<tr><td>{row['find']}</td><td>{'-' if row['with_tool'] is None else row['with_tool']}</td>"
        f"<td>{row['without_tool']:.0f}</td><td>{_times(row['speedup'])}</td></tr>" for row in report.review)
    intervals = ", ".join(f"{start:.1f}-{end:.1f} s" for start, end in report.intervals)
    loop = _loop_section(report.loop)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sisyphus demo: road works found by example</title>
<style>{_STYLE}</style></head><body>
<h1>Road works, found by one example</h1>
<p>A synthetic drive ({html.escape(os.path.basename(report.video))}) with road works at {intervals}.
One road-works frame is the query; the {report.k} nearest frames come back from the faiss index
(the query frame itself left out) and are checked against the ground truth.</p>
<table class="figures">{figures}</table>
<h2>Timeline</h2>
<div class="timeline">{truth_bars}{marks}</div>
<div class="legend"><span style="color:#f90">&#9632; road works (truth)</span>
<span style="color:#2a9d4b">| hit</span><span style="color:#d33">| miss</span>
<span style="color:#246">| query</span> <small>0-{length:.0f} s</small></div>
<h2>Query</h2>
<div class="grid"><figure class="query"><img alt="query" src="{thumbnail_data_uri(str(report.query['path']))}">
<figcaption>query: frame {report.query['frame_id']} at {float(report.query['pts_seconds']):.1f} s
</figcaption></figure></div>
<h2>Top {report.k} results</h2>
<div class="grid">{results}</div>
<h2>Frames a person reviews</h2>
<table class="figures"><tr><th>to find</th><th>with the tool</th><th>without (expected)</th><th>speed-up</th></tr>
{review}</table>
<p><small>Without the tool: the expected position of the n-th road-works frame in a random order,
n (N + 1) / (R + 1). The rarer the scene, the larger the speed-up.</small></p>
{loop}
</body></html>
"""
    out.write_text(page, encoding="utf-8")
    return out

def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _loop_section(loop: dict[str, Any] | None) -> str:
    """The labelling loop: frames reviewed in discover rounds vs one query's ranking vs random order."""
    if not loop:
        return ""
    rows = "".join(
        f"<tr><td>{share} of {loop['relevant']}</td>"
        f"<td><b>{'-' if loop['reached'][key] is None else loop['reached'][key]}</b></td>"
        f"<td>{'-' if loop['single'][key] is None else loop['single'][key]}</td>"
        f"<td>{loop['random'][key]:.0f}</td></tr>"
        for key, share in (("50%", "50 %"), ("80%", "80 %"), ("100%", "all")))
    bars = "".join(f'<span title="round {number}: {found} found">{"&#9632;" * found or "&#183;"}</span> '
                   for number, found in enumerate(loop["found_per_round"], start=1))
    return f"""<h2>The labelling loop</h2>
<p>From the query frame, a simulated reviewer (the ground truth answering for a person) asks
<code>sisyphus discover</code> for {loop['k']} frames at a time ({html.escape(str(loop['method']))}), labels
each one road works or not, and asks again: {loop['rounds']} rounds, {loop['found']} of the
{loop['relevant']} other road-works frames found after {loop['reviewed']} reviewed.</p>
<table class="figures"><tr><th>to find</th><th>discover rounds</th><th>one query's ranking</th>
<th>random order (expected)</th></tr>{rows}</table>
<p><small>Road-works frames found per round: {bars}</small></p>"""
