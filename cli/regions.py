"""`sisyphus regions build`: region vectors of the stored frames (find this object)."""

from __future__ import annotations

from typing import Annotated

import typer
from sisyphus_db.cli.context import database, emit_json, stderr_console
from sisyphus_db.cli.progress import StageProgress, progress_bars

app = typer.Typer(help="Region vectors of frames (multi-scale grid over the feature map) for "
                  "`search --method regions`.", no_args_is_help=True)


@app.command()
def build(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option("--model", help="Model whose frames to cover "
                                              "(default: the only stored one).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per model batch and "
                                            "per stored transaction.")] = 16,
    scales: Annotated[int, typer.Option("--scales", min=1, max=6, help="Grid scales: 1 (whole frame), "
                                        "2 (+4 regions), 3 (+9), 4 (+16), ...")] = 4,
    pooling: Annotated[str, typer.Option("--pooling", help="max (R-MAC) or gem per region.")] = "max",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Compute and store region vectors for the frames that have none (resumable, idempotent)."""
    from sisyphus_db.local.regions import build_regions
    from sisyphus_db.search.indexing import resolve_model

    with database(ctx) as db:
        stored = resolve_model(db, model)
        with progress_bars() as progress:
            report = build_regions(db, stored, batch_size=batch_size, scales=scales, pooling=pooling,
                                   device=device, progress=StageProgress(progress))
    for failure in report.failed[:5]:
        stderr_console().print(f"warning: cannot read {failure}", soft_wrap=True, markup=False)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"stored {report.regions} regions of {report.frames} frames for {report.model} in "
               f"{report.seconds:.1f} s ({report.skipped} unreadable); search them after "
               "`sisyphus index build --kind regions`")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="regions")
