"""`sisyphus bow build`: the bag-of-local-features index (vocabulary, assignment maps, inverted file)."""

from __future__ import annotations

from typing import Annotated

import typer
from sisyphus_db.cli.context import database, emit_json
from sisyphus_db.cli.progress import StageProgress, progress_bars

app = typer.Typer(help="Bag of local convolutional features for `search --method bow`.", no_args_is_help=True)


@app.command()
def build(
    ctx: typer.Context,
    words: Annotated[int | None, typer.Option("--words", help="Vocabulary size (default: one word per 40 "
                                              "sampled descriptors, at most 25000, never more than 1 per 39).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model (default: the only stored one).")] = None,
    layer: Annotated[str, typer.Option("--layer", help="Feature map of the local descriptors: last.")] = "last",
    sample: Annotated[int, typer.Option("--sample", min=1, help="Local descriptors sampled to train the "
                                        "vocabulary (64 positions per sampled frame).")] = 50_000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per model batch.")] = 16,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Train a new vocabulary even if one exists.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda (k-means and the model).")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Train the visual vocabulary (once), assign the new frames' local features, rebuild the inverted file."""
    from sisyphus_db.local.bow.build import build_bow
    from sisyphus_db.search.indexing import resolve_model

    with database(ctx) as db:
        stored = resolve_model(db, model)
        with progress_bars() as progress:
            report = build_bow(db, stored, words=words, layer=layer, sample_descriptors=sample,
                               batch_size=batch_size, rebuild=rebuild, device=device,
                               progress=StageProgress(progress))
    if json_output:
        emit_json(report.to_json())
        return
    trained = (f"trained {report.words} words on {report.descriptors} descriptors of {report.frames_sampled} frames"
               if report.trained else f"kept the {report.words}-word vocabulary")
    typer.echo(f"{trained}; assigned {report.frames_assigned} frames; the inverted file holds "
               f"{report.frames_indexed} frames ({sum(report.seconds.values()):.1f} s)")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="bow")
