"""`sisyphus ingest` and `sisyphus models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, settings, stderr_console, stdout_console
from sisyphus_db.errors import InputError

KEYFRAME_METHODS = ("scene", "similarity", "iframe", "fps")


def parse_tags(values: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--tag expects KEY=VALUE, got {value!r}")
        tags[key.strip()] = text
    return tags


class _ProgressObserver:
    """Rich progress bars on stderr: sources done, frames stored and frames/s."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.sources = progress.add_task("sources", total=None, rate="")
        self.frames = progress.add_task("frames stored", total=None, rate="")

    def sources_planned(self, total: int) -> None:
        self.progress.update(self.sources, total=total)

    def source_finished(self) -> None:
        self.progress.advance(self.sources)

    def frames_stored(self, count: int) -> None:
        self.progress.advance(self.frames, count)
        task = self.progress.tasks[self.frames]
        if task.elapsed:
            self.progress.update(self.frames, rate=f"{task.completed / task.elapsed:.1f} frames/s")


def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image files, folders (recursive) and videos.")],
    keyframes: Annotated[
        str, typer.Option("--keyframes", help=f"Key-frame selection for videos: {', '.join(KEYFRAME_METHODS)}.")
    ] = "scene",
    fps: Annotated[float | None, typer.Option("--fps", help="Frames per second for --keyframes fps "
                                              "(with similarity: the candidate rate).")] = None,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Scene-change threshold (scene, default "
                                                    "0.3) or cosine similarity (similarity, default 0.95).")] = None,
    max_gap: Annotated[float, typer.Option("--max-gap", min=0.0, help="scene: keep a frame at least every S "
                                           "seconds even without a cut (0: only at cuts).")] = 2.0,
    model: Annotated[str, typer.Option("--model", help="Embedding model (see `sisyphus models`).")] = "efficientnet-lite0",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE metadata for the sources (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per forward pass and COPY.")] = 32,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Decoding processes "
                                                "(default: cores - 1, at most 4).")] = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Run as a Ray Data job: `--ray` "
                                            "alone starts a local Ray instance, `--ray HOST:PORT` joins a cluster "
                                            "(default address: $SISYPHUS_RAY_ADDRESS). Workers need the inputs at "
                                            "the same paths and the database by URL.")] = None,
    ray_actors: Annotated[int | None, typer.Option("--ray-actors", min=1, help="Embedding actors with --ray "
                                                   "(default: one per GPU, or one).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON document.")] = False,
) -> None:
    """Ingest images, folders and videos: key frames, embeddings and rows in PostgreSQL.

    Running it again adds nothing; an interrupted run resumes. Broken inputs are recorded
    in `ingest_errors` and skipped; the exit code is 1 when any input failed.
    """
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.ingest.messages import KeyframeOptions
    from sisyphus_db.ingest.pipeline import IngestOptions, run_ingest

    if keyframes not in KEYFRAME_METHODS:
        raise InputError(f"unknown --keyframes {keyframes!r}: expected one of {', '.join(KEYFRAME_METHODS)}")
    if keyframes == "fps" and fps is None:
        raise InputError("--keyframes fps needs --fps F (frames per second)")
    if fps is not None and fps <= 0:
        raise InputError(f"--fps must be > 0, got {fps}")
    options = IngestOptions(
        model=model,
        device=resolve_torch_device(device),
        keyframes=KeyframeOptions(method=keyframes, fps=fps, threshold=threshold,
                                  max_gap_seconds=max_gap or None),
        tags=parse_tags(tag or []),
        batch_size=batch_size,
        workers=workers,
    )
    settings(ctx).ensure_home()
    console = stderr_console()
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[rate]}", style="dim"),
        console=console, disable=not console.is_terminal,
    )
    with database(ctx) as db, progress:
        if ray is not None:
            from sisyphus_db.distributed.ingest_job import run_ray_ingest

            summary = run_ray_ingest(db, paths, options, address=ray, observer=_ProgressObserver(progress),
                                     actors=ray_actors)
        else:
            summary = run_ingest(db, paths, options, _ProgressObserver(progress))
        if summary.frames:  # keep video segments current (only windows someone already built)
            from sisyphus_db.temporal.segments import refresh_segments

            refresh_segments(db, summary.model)
    if json_output:
        emit_json(summary.to_json())
    else:
        _print_summary(summary.to_json())
    if summary.errors:
        raise typer.Exit(1)


def _print_summary(summary: dict[str, Any]) -> None:
    out = stdout_console()
    out.print(
        f"ingested {summary['frames']} frames from {summary['sources']} sources in {summary['seconds']:.1f} s "
        f"({summary['frames_per_second']:.1f} frames/s) with {summary['model']}; "
        f"skipped {summary['skipped']} already ingested; {summary['errors']} errors",
        soft_wrap=True,
    )
    err = stderr_console()
    for detail in summary["error_details"]:
        err.print(f"  failed: {detail['uri']}: {detail['reason']}", soft_wrap=True, markup=False)


def models(json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False) -> None:
    """List the embedding models available, their dimensions and weights."""
    from sisyphus_db.embed.models import list_models

    infos = list_models()
    if json_output:
        emit_json([{
            "name": info.name, "dim": info.dim, "default_pooling": info.default_pooling,
            "poolings": list(info.poolings), "weights": info.weights_source, "weights_path": info.weights_path,
            "available": info.available,
        } for info in infos])
        return
    table = Table("model", "dim", "pooling", "weights", "available")
    for info in infos:
        table.add_row(info.name, str(info.dim or "-"), f"{info.default_pooling} (also: "
                      f"{', '.join(p for p in info.poolings if p != info.default_pooling)})",
                      info.weights_source, "yes" if info.available else "no")
    stdout_console().print(table)
    stdout_console().print("Choose pooling with NAME@avg|max|gem, e.g. resnet50@gem; any TorchScript file with "
                           "torchscript:/path/model.pt.", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command(name="ingest")(ingest)
    app.command(name="models")(models)
