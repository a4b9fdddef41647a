"""`sisyphus colour build`: dominant-colour palette vectors of the ingested frames (model `colour`)."""

from __future__ import annotations

from typing import Annotated

import typer

from sisyphus_db.cli.context import database, emit_json

app = typer.Typer(help="Dominant-colour palettes as a model named `colour` (search --model colour).",
                  no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Palette vectors (faiss k-means in Lab, sorted by share) for every frame without one.

    Incremental. Then `sisyphus search --model colour --frame ID`, `sisyphus index build --model colour`
    or `sisyphus segments build --model colour` (a video's colour signature over time).
    """
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.temporal.colour_build import build_colour

    with database(ctx) as db:
        with progress_bars() as progress:
            report = build_colour(db, device=resolve_torch_device(device), progress=StageProgress(progress))
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"stored {report.added} colour palettes in {report.seconds:.1f} s ({report.failed} unreadable "
               f"frames); {report.total} frames have one")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="colour")
