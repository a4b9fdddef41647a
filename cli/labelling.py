"""`sisyphus propagate`, `dedup`, `cluster`, `export [dataset] NAME` and `export video`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from sisyphus_db.cli.context import database, emit_json, stderr_console, stdout_console

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ModelOption = Annotated[str | None, typer.Option("--model", help="Model whose graph/vectors to use "
                                                 "(default: the only stored one).")]


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        stderr_console().print(f"warning: {warning}", soft_wrap=True, markup=False)


def propagate(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Label to spread, e.g. road-works.")],
    k: Annotated[int, typer.Option("--k", help="Neighbours per frame used from the stored k-NN graph.")] = 10,
    alpha: Annotated[float, typer.Option("--alpha", help="How far labels spread, in (0, 1): the weight of the "
                                         "neighbours against the seeds (Zhou et al. use 0.99).")] = 0.9,
    model: ModelOption = None,
    solver: Annotated[str, typer.Option("--solver", help="cg (conjugate gradients) or iterate (Zhou's "
                                        "iteration); both reach the same scores.")] = "cg",
    top: Annotated[int, typer.Option("--top", help="Best-scored unlabelled frames to show.")] = 10,
    json_output: JsonOption = False,
) -> None:
    """Spread a label's manual positives (+1) and negatives (-1) over the k-NN graph; store a score per frame."""
    from sisyphus_db.label.propagate import propagate_label
    from sisyphus_db.search.indexing import resolve_model

    with database(ctx) as db:
        stored = resolve_model(db, model)
        report = propagate_label(db, name, stored, k=k, alpha=alpha, solver=solver, top=top)  # type: ignore[arg-type]
    _warn(report.warnings)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"label {report.label!r}: {report.positives} positive and {report.negatives} negative seeds spread "
               f"over {report.frames} frames ({report.edges} edges, k={report.k}, alpha={report.alpha:g}) in "
               f"{report.iterations} {report.solver} iterations; {report.leaning_positive} frames lean positive. "
               f"Scores are in label_scores (view label_score_hits).")
    if report.top_unlabelled:
        table = Table("frame", "score", "source", "time s", "path", title="best-scored unlabelled frames")
        for frame in report.top_unlabelled:
            table.add_row(str(frame.frame_id), f"{frame.score:.3f}", frame.source_uri, f"{frame.pts_seconds:.2f}",
                          frame.path)
        stdout_console().print(table)


def dedup(
    ctx: typer.Context,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Frames closer than this are "
                                                    "near-duplicates (embedding: cosine distance, default 0.05).")]
    = None,
    model: ModelOption = None,
    method: Annotated[str, typer.Option("--method", help="How near-duplicates are found: embedding (pairs from "
                                        "the stored k-NN graph) or phash (perceptual hashes: `sisyphus hashes "
                                        "build`).")] = "embedding",
    max_distance: Annotated[int | None, typer.Option("--max-distance", help="--method phash: frames whose pHashes "
                                                     "differ in at most D of 64 bits (default 6).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Group near-duplicate frames (connected components of close pairs), one representative per group."""
    from sisyphus_db.label.dedup import find_duplicates
    from sisyphus_db.search.indexing import resolve_model

    if max_distance is not None:
        if method != "phash":
            from sisyphus_db.errors import InputError

            raise InputError("--max-distance applies to --method phash (embedding uses --threshold)")
        threshold = float(max_distance)
    with database(ctx) as db:
        report = find_duplicates(db, resolve_model(db, model), threshold=threshold, method=method)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"{report.groups} near-duplicate groups ({report.method}, distance < {report.threshold:g}) hold "
               f"{report.frames_in_groups} frames: {report.cross_video_groups} span several sources, "
               f"{report.within_video_groups} stay within one; keeping one representative per group "
               f"({report.representative_rule}) drops {report.droppable_frames} frames. "
               "Rows are in duplicate_groups (view duplicate_group_sizes).")
    if report.exact_duplicates is not None:
        typer.echo(f"exact duplicates (same sha256): {report.exact_duplicates['exact_duplicate_frames']} frames in "
                   f"{report.exact_duplicates['exact_duplicate_groups']} groups")
    if report.largest:
        table = Table("group", "size", "sources", "max distance", "representative", title="largest groups")
        for group in report.largest:
            table.add_row(str(group.group_id), str(group.size), str(group.sources), f"{group.max_distance:.4f}",
                          group.representative_path)
        stdout_console().print(table)


def cluster(
    ctx: typer.Context,
    k: Annotated[int | None, typer.Option("--k", help="Clusters (default: about sqrt(frames), at most 1024).")]
    = None,
    model: ModelOption = None,
    niter: Annotated[int, typer.Option("--niter", help="k-means iterations.")] = 20,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (faiss GPU k-means).")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the k-means initialisation.")] = 0,
    redo: Annotated[int, typer.Option("--redo", help="Runs from different random starts; the best is kept.")] = 1,
    show: Annotated[int, typer.Option("--show", help="Clusters to list (smallest and most isolated first).")] = 20,
    json_output: JsonOption = False,
) -> None:
    """faiss k-means over a model's embeddings; stores each frame's cluster and distance to its centroid."""
    from sisyphus_db.label.cluster import cluster_frames
    from sisyphus_db.search.indexing import resolve_model

    with database(ctx) as db:
        report = cluster_frames(db, resolve_model(db, model), k=k, niter=niter, device=device, seed=seed,
                                nredo=redo)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"{report.frames} frames in {report.k} clusters ({report.niter} iterations on {report.device}, "
               f"k-means {report.kmeans_seconds:.1f} s); rows are in clusters (view cluster_sizes).")
    table = Table("cluster", "size", "sources", "mean dist", "max dist", "isolation",
                  title="smallest, most isolated clusters first (rare scenes)")
    for summary in report.clusters[:max(0, show)]:
        table.add_row(str(summary.cluster), str(summary.size), str(summary.sources), f"{summary.mean_distance:.4f}",
                      f"{summary.max_distance:.4f}", f"{summary.isolation:.4f}")
    stdout_console().print(table)


class ExportGroup(TyperGroup):
    """`export NAME ...` means `export dataset NAME ...`; `export video ...` and `export dataset ...` as written."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["dataset", *args]
        return super().parse_args(ctx, args)


export_app = typer.Typer(
    cls=ExportGroup, no_args_is_help=True,
    help="Export a label as a training set (`sisyphus export NAME --format ... --out DIR`, short for "
         "`sisyphus export dataset NAME ...`) or frames as a video (`sisyphus export video ...`).")


@export_app.command("dataset")
def export_dataset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Label to export.")],
    fmt: Annotated[str, typer.Option("--format", help="imagefolder, csv, parquet or coco.")]
    = ...,  # type: ignore[assignment]
    out: Annotated[Path, typer.Option("--out", help="Output folder (refused when it exists and is not empty, "
                                      "unless --force).")] = ...,  # type: ignore[assignment]
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of frames for validation; whole "
                                                "sources go to one split.")] = 0.2,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Also export unlabelled frames whose "
                                                    "propagated score is at least this (in [-1, 1]).")] = None,
    include_negatives: Annotated[bool, typer.Option("--include-negatives", help="Export the negatives as "
                                                    "class not-NAME.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split by source.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Write into a non-empty folder, replacing what this "
                                        "format writes there.")] = False,
    model: Annotated[str | None, typer.Option("--model", help="With --min-score: the model the scores were "
                                              "propagated under (default: the only one).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Write a label's frames as a training set with a train/val split by source."""
    from sisyphus_db.label.export_dataset import export_dataset as run_export

    with database(ctx) as db:
        report = run_export(db, name, fmt, out, val_fraction=val_fraction, min_score=min_score,
                            include_negatives=include_negatives, seed=seed, force=force, model_name=model)
    _warn(report.warnings)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"exported {report.frames} frames of {report.label!r} as {report.format} to {report.out}: "
               f"train {report.train} ({report.train_sources} sources), val {report.val} ({report.val_sources} "
               f"sources); {report.positives} positive, {report.negatives} negative")


@export_app.command("video")
def export_video(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Label whose positive frames to show.")] = None,
    search: Annotated[int | None, typer.Option("--search", help="A stored search run's results instead, "
                                               "in rank order.")] = None,
    out: Annotated[Path, typer.Option("--out", help="The MP4 file to write.")] = ...,  # type: ignore[assignment]
    fps: Annotated[float, typer.Option("--fps", help="Frames shown per second.")] = 2.0,
    contact_sheet: Annotated[Path | None, typer.Option("--contact-sheet", help="Also write a grid of "
                                                       "thumbnails to this JPEG.")] = None,
    columns: Annotated[int | None, typer.Option("--columns", help="Contact sheet columns (default: about "
                                                "square, at most 8).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Write frames as an H.264 clip with their source and time burnt in (and a contact sheet)."""
    from sisyphus_db.label.export_video import clip_frames, write_clip

    with database(ctx) as db:
        frames = clip_frames(db, label=name, run_id=search)
    report = write_clip(frames, out, fps=fps, force=force, contact_sheet=contact_sheet, columns=columns)
    _warn(report.warnings)
    if json_output:
        emit_json(report.to_json())
        return
    sheet = f"; contact sheet {report.contact_sheet}" if report.contact_sheet else ""
    typer.echo(f"wrote {report.out}: {report.frames} frames at {report.fps:g} fps, {report.width}x{report.height} "
               f"{report.codec}{sheet}")


def register(app: typer.Typer) -> None:
    app.command(name="propagate")(propagate)
    app.command(name="dedup")(dedup)
    app.command(name="cluster")(cluster)
    app.add_typer(export_app, name="export")

