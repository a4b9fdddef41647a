"""`sisyphus demo`: the whole job on a generated drive video, offline, in one command."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import emit_json, settings, stderr_console, stdout_console


def demo(
    ctx: typer.Context,
    duration: Annotated[float, typer.Option("--duration", help="Seconds of generated drive video.")] = 120.0,
    fps: Annotated[float, typer.Option("--fps", help="Key frames per second to ingest (--keyframes fps), so "
                                       "every road-works interval gets frames.")] = 2.0,
    k: Annotated[int, typer.Option("--k", help="Results to fetch and score.")] = 10,
    find: Annotated[int, typer.Option("--find", min=1, help="Headline effort: frames a person reads to find this "
                                      "many road-works frames, with the tool and in random order.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the drive (traffic, bends, road-works times).")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help="HTML page to write (a folder gets demo.html; "
                                             "default: demo.html in the demo's home).")] = None,
    model: Annotated[str, typer.Option("--model", help="Embedding model (max pooling finds small objects "
                                       "on a large scene better than the average).")] = "efficientnet-lite0@max",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Decoding processes.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON document.")] = False,
) -> None:
    """Generate a drive video with road works, ingest it, index it, query with one road-works frame,
    and score the results against the ground truth; writes an HTML page of them.

    It runs on its own embedded database in the `demo` folder of SISYPHUS_HOME (or --home),
    so it never mixes with your data; run again, it reuses the video and the stored frames
    and reports the same figures.
    """
    from sisyphus_db.db.database import open_database
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.evaluate.demo import DemoOptions, prepare_demo_video, run_demo
    from sisyphus_db.evaluate.report_html import write_demo_html

    started = time.perf_counter()
    options = DemoOptions(duration_s=duration, keyframe_fps=fps, k=k, find=find, seed=seed, model=model,
                          device=resolve_torch_device(device), workers=workers)
    options.check()
    base = settings(ctx)
    # An external database (--database-url) is used as asked; the demo's frames are then told
    # apart by their source. The embedded default gets a home of its own.
    demo_settings = dataclasses.replace(base, home=base.home / "demo") if base.uses_embedded_database else base
    demo_home = base.home / "demo"
    demo_settings.ensure_home()
    demo_home.mkdir(parents=True, exist_ok=True)
    err = stderr_console()
    err.print(f"demo home: {demo_home}", soft_wrap=True, markup=False, highlight=False)
    clock = time.perf_counter()
    video, truth = prepare_demo_video(demo_home / "videos", options)
    video_seconds = time.perf_counter() - clock
    if demo_settings.uses_embedded_database:
        # The demo's own database follows the code: a newer sisyphus migrates it instead of refusing.
        from sisyphus_db.db import migrate

        db = open_database(demo_settings, require_schema=False)
        migrate.upgrade(db)
    else:
        db = open_database(demo_settings)
    from sisyphus_db.cli.progress import StageProgress, progress_bars

    try:
        with progress_bars() as progress:
            report = run_demo(db, video, truth, options, StageProgress(progress))
    finally:
        db.dispose()
    target = demo_home / "demo.html" if out is None else (out / "demo.html" if out.is_dir() else out)
    report.html = str(write_demo_html(report, target).resolve())
    report.seconds = {"video": video_seconds, **report.seconds, "total": time.perf_counter() - started}
    if json_output:
        emit_json(report.to_json())
        return
    _print(report.to_json())


def _print(doc: dict[str, object]) -> None:
    out = stdout_console()
    table = Table("figure", "value", title=f"road works found by one example ({doc['model']})")
    table.add_row("key frames", f"{doc['frames']} at {doc['keyframe_fps']:g}/s, {doc['blockage_frames']} show road "
                  f"works (base rate {100 * float(doc['base_rate']):.1f}%)")  # type: ignore[arg-type]
    table.add_row(f"precision@{doc['k']}", f"{doc['precision_at_k']:.2f} ({doc['lift']:.1f}x chance)")
    table.add_row(f"recall@{doc['k']}", f"{doc['recall_at_k']:.2f}; {doc['intervals_found']} of "
                  f"{doc['intervals_total']} road-works intervals hit")
    with_tool = doc["frames_to_review"] if doc["frames_to_review"] is not None else "not reached"
    speedup = f"{doc['speedup']:.1f}x" if doc["speedup"] is not None else "-"
    table.add_row(f"frames to review to find {doc['find']}", f"{with_tool} with the tool, "
                  f"{doc['frames_without_tool']:.0f} without (speed-up {speedup})")
    loop = doc.get("discover")
    if isinstance(loop, dict):
        for key, share in (("50%", "50%"), ("80%", "80%"), ("100%", "all")):
            reached, single = loop["reached"][key], loop["single"][key]
            table.add_row(f"frames to review to find {share} of them",
                          f"{'not reached' if reached is None else reached} in discover rounds of {loop['k']} "
                          f"({loop['method']}), {'-' if single is None else single} down one query's ranking, "
                          f"{loop['random'][key]:.0f} in random order")
    seconds = doc["seconds"]
    assert isinstance(seconds, dict)
    table.add_row("time", f"{seconds['total']:.0f} s (ingest {seconds.get('ingest', 0):.0f} s)")
    out.print(table)
    out.print(f"results page: {doc['html']}", soft_wrap=True, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)
