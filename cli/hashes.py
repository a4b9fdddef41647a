"""`sisyphus hashes build` and the rendering of `sisyphus search --method phash`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stdout_console

app = typer.Typer(help="Perceptual hashes (pHash and wavelet hash) of every frame, for near-copy search and dedup.",
                  no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Hash every frame that has no hash yet (pHash and wavelet hash as bit(64) in frame_hashes).

    Incremental and resumable. Then `sisyphus search --method phash --image F` or
    `sisyphus dedup --method phash --max-distance D`; exact duplicates (same sha256) are counted too.
    """
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.temporal.hash_store import build_hashes

    with database(ctx) as db:
        with progress_bars() as progress:
            report = build_hashes(db, StageProgress(progress))
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"hashed {report.hashed} frames in {report.seconds:.1f} s ({report.failed} unreadable); "
               f"{report.total} frames have hashes; exact duplicates (same sha256): "
               f"{report.exact_duplicate_frames} frames in {report.exact_duplicate_groups} groups")


def render_hash_search(ctx: typer.Context, *, images: list[Path], frame: int | None, k: int, save: str | None,
                       no_save: bool, json_output: bool) -> None:
    """`search --method phash`: nearest perceptual hashes (Hamming distance in bits)."""
    from sisyphus_db.temporal.hash_search import search_by_hash

    with database(ctx) as db:
        outcome = search_by_hash(db, images=images, frame_id=frame, k=k, save=not no_save, name=save)
    if json_output:
        emit_json(outcome.to_json())
        return
    table = Table("rank", "bits", "source", "time s", "path", title=f"{len(outcome.hits)} results (phash, "
                  f"{outcome.elapsed_ms:.0f} ms)" + (f", run {outcome.run_id}" if outcome.run_id else ""))
    for hit in outcome.hits:
        table.add_row(str(hit["rank"]), f"{hit['distance']:.0f}", hit["source_uri"], f"{hit['pts_seconds']:.2f}",
                      hit["path"])
    stdout_console().print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hashes")
