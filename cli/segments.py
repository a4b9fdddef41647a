"""`sisyphus segments build` and the rendering of `sisyphus search --video / --segment`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stderr_console, stdout_console

app = typer.Typer(help="Segment vectors: windows of a video pooled from its frame vectors (video-to-video search).",
                  no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="Frame model (default: the only stored one).")] = None,
    window: Annotated[float, typer.Option("--window", help="Window length in seconds.")] = 4.0,
    stride: Annotated[float | None, typer.Option("--stride", help="Seconds between window starts "
                                                 "(default: half the window).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Pool every ingested video's frame vectors into window vectors (mean and max, L2-normalised).

    Incremental: videos that already have segments of this window are skipped, so run it
    again after each ingest (`sisyphus ingest` also refreshes the windows already built).
    For big corpora: `sisyphus index build --kind segments` (a faiss sidecar in the shared registry).
    """
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.search.indexing import resolve_model
    from sisyphus_db.temporal.segments import build_segments
    from sisyphus_db.temporal.windows import check_window

    check_window(window, stride)
    with database(ctx) as db:
        stored = resolve_model(db, model)
        with progress_bars() as progress:
            report = build_segments(db, stored, window=window, stride=stride, progress=StageProgress(progress))
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"stored {report.segments_added} segments of {report.sources} videos ({report.window:g} s windows, "
               f"stride {report.stride:g} s) in {report.seconds:.1f} s; {report.segments_total} segments in all "
               f"for {report.model}")


def render_video_search(ctx: typer.Context, *, video: Path | None, segment: str | None, model: str | None, k: int,
                        window: float | None, fps: float, device: str, save: str | None, no_save: bool,
                        json_output: bool) -> None:
    """`search --video FILE` / `--segment SOURCE_ID:START-END`: videos and time ranges like the clip."""
    from sisyphus_db.errors import InputError
    from sisyphus_db.search.indexing import resolve_model
    from sisyphus_db.temporal.video_query import clip_from_segment, clip_from_video
    from sisyphus_db.temporal.video_search import search_video

    if (video is None) == (segment is None):
        raise InputError("give one of --video FILE and --segment SOURCE_ID:START-END")
    with database(ctx) as db:
        stored = resolve_model(db, model)
        clip = (clip_from_video(video, stored, fps=fps, device=device) if video is not None
                else clip_from_segment(db, stored, str(segment)))
        outcome = search_video(db, stored, clip, k=k, window=window, save=not no_save, name=save)
    for warning in outcome.warnings:
        stderr_console().print(f"warning: {warning}", soft_wrap=True, markup=False)
    if json_output:
        emit_json(outcome.to_json())
        return
    table = Table("rank", "score", "source", "query s", "match s",
                  title=f"{len(outcome.hits)} videos ({outcome.elapsed_ms:.0f} ms)"
                  + (f", run {outcome.run_id}" if outcome.run_id else ""))
    for hit in outcome.hits:
        table.add_row(str(hit.rank), f"{hit.score:.3f}", hit.source_uri,
                      f"{hit.query_start:.1f}-{hit.query_end:.1f}", f"{hit.match_start:.1f}-{hit.match_end:.1f}")
    stdout_console().print(table)


def videocopy(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Videos and folders of videos (they are ingested).")],
    transformations: Annotated[str | None, typer.Option("--transformations", help="Comma-separated, default all: "
                                                        "reencode, resize, crop, colour, speed, excerpt, insert.")] = None,
    window: Annotated[float, typer.Option("--window", help="Segment window in seconds (excerpts are at least "
                                          "this long).")] = 3.0,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second ingested and decoded from queries.")] = 2.0,
    model: Annotated[str, typer.Option("--model", help="Embedding model.")] = "efficientnet-lite0",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the excerpts and insertions.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Video copy detection with localisation: r@1, mAP and temporal IoU per transformation and method.

    The videos are ingested; each is copied with every transformation (low-bitrate re-encode,
    half size, crop, colour shift, 1.25x speed, 3-6 s excerpt, excerpt inside generated
    footage) and each copy queries the corpus by frame voting, segments, and segments +
    alignment (`search --video`). Stored in eval_runs (kind videocopy) / eval_metrics.
    """
    from sisyphus_db.cli.context import settings
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.evaluate.videocopy import VideoCopyOptions, run_videocopy
    from sisyphus_db.temporal.transforms import TRANSFORMATIONS
    from sisyphus_db.temporal.windows import check_window

    check_window(window, None)
    names = tuple(n.strip() for n in transformations.split(",") if n.strip()) if transformations else TRANSFORMATIONS
    options = VideoCopyOptions(model=model, device=resolve_torch_device(device), fps=fps, window=window,
                               transformations=names, seed=seed)
    settings(ctx).ensure_home()
    with database(ctx) as db:
        with progress_bars() as progress:
            stages = StageProgress(progress)
            report = run_videocopy(db, paths, options, stages, stages)
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    out = stdout_console()
    out.print(f"{report.videos} videos, {report.queries} transformed copies; {report.model}; "
              f"stored as eval run {report.run_id}", soft_wrap=True)
    for method, per in document["results"].items():
        table = Table("transformation", "r@1", "mAP", "tIoU", "queries",
                      title=f"{method} ({document['query_ms'][method]:.0f} ms a query)")
        for name, values in per.items():
            table.add_row(name, *(f"{values[key]:.3f}" if values[key] is not None else "-"
                                  for key in ("r@1", "map", "tiou")), str(values["queries"]))
        out.print(table)


def render_knn_videos(ctx: typer.Context, *, path: Path, k: int, model: str, device: str, workers: int | None,
                      json_output: bool) -> None:
    """`eval knn PATH --videos`: leave-one-out k-NN accuracy of whole videos per descriptor."""
    from sisyphus_db.cli.context import settings
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.evaluate.knn_videos import KnnVideoOptions, run_knn_videos

    options = KnnVideoOptions(k=k, model=model, device=resolve_torch_device(device), workers=workers)
    settings(ctx).ensure_home()
    with database(ctx) as db:
        with progress_bars() as progress:
            stages = StageProgress(progress)
            report = run_knn_videos(db, path, options, stages, stages)
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    classes = ", ".join(f"{name} ({count})" for name, count in report.classes.items())
    out = stdout_console()
    out.print(f"{report.videos} videos in {len(report.classes)} classes: {classes}; k={k}; "
              f"stored as eval run {report.run_id}", soft_wrap=True, markup=False)
    table = Table("descriptor", "videos", "accuracy", *report.classes, title=f"leave-one-out {k}-NN accuracy of videos")
    for result in document["results"]:
        accuracy = "-" if result["accuracy"] is None else f"{result['accuracy']:.3f}"
        table.add_row(result["descriptor"], str(result["videos"]), accuracy,
                      *(f"{result['per_class'].get(label, 0.0):.3f}" if result["per_class"] else "-"
                        for label in report.classes))
    out.print(table)


def register(root: typer.Typer) -> None:
    from sisyphus_db.cli import evaluate

    root.add_typer(app, name="segments")
    evaluate.app.command("videocopy")(videocopy)
