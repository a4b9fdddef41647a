"""`sisyphus import-embeddings`: vectors computed elsewhere, with their frames, from Parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sisyphus_db.cli.context import database, emit_json


def import_embeddings(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Parquet files with columns path, embedding (and optionally "
                                                "source, frame_index, pts_seconds, tags).")],
    model: Annotated[str, typer.Option("--model", help="Name to register the imported vectors under.")],
    metric: Annotated[str, typer.Option("--metric", help="cosine (the only metric searched end to end; l2 and ip "
                                        "are refused).")] = "cosine",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Load embeddings computed elsewhere with their frames; every file is checked before anything is stored."""
    from sisyphus_db.cli.progress import progress_bars
    from sisyphus_db.ingest.imports import check_metric, import_embeddings as run_import

    check_metric(metric)
    with database(ctx) as db, progress_bars() as progress:
        task = progress.add_task("rows stored", total=None)
        report = run_import(db, files, model_name=model, metric=metric,
                            progress=lambda count: progress.advance(task, count))
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"imported {report.rows} rows of {report.dim}-d {report.model} vectors from {len(report.files)} "
               f"file(s): {report.frames_added} new frames, {report.embeddings_added} new vectors, "
               f"{report.sources} sources in {report.seconds:.1f} s; search them with --frame or --vector after "
               "`sisyphus index build`")


def register(app: typer.Typer) -> None:
    app.command(name="import-embeddings")(import_embeddings)
