"""`sisyphus discover`: the next frames to review for a label, from its positives and negatives."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stderr_console, stdout_console


def discover(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The label to find more of (it needs at least one positive).")],
    k: Annotated[int, typer.Option("--k", help="Frames to propose.")] = 10,
    per_source: Annotated[int | None, typer.Option("--per-source", help="At most N proposals per source.")] = None,
    where: Annotated[str | None, typer.Option("--where", help="SQL filter over frames, sources and tags, as in "
                                              "`sisyphus search`.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="rocchio, multi, classifier or expand "
                                               "(default: the best measured, see README).")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model to search (default: the only stored one).")]
    = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Propose the next K frames to review for a label: more like its positives, unlike its negatives.

    Frames that already carry the label (positive or negative) are never proposed; the
    proposal is stored as a search run, so `sisyphus label add NAME --search RUN_ID` takes it.
    """
    from sisyphus_db.label.discover import check_discover_options, discover as run_discover
    from sisyphus_db.search.indexing import resolve_model

    check_discover_options(k=k, per_source=per_source, method=method)
    with database(ctx) as db:
        outcome = run_discover(db, resolve_model(db, model), name, k=k, per_source=per_source, where=where,
                               method=method)
    for warning in outcome.warnings:
        stderr_console().print(f"warning: {warning}", soft_wrap=True, markup=False)
    if json_output:
        emit_json(outcome.to_json())
        return
    table = Table("rank", "frame", "distance", "score", "source", "time s", "path",
                  title=f"{len(outcome.hits)} frames to review for {outcome.label} ({outcome.method}, "
                  f"{outcome.backend}, {outcome.elapsed_ms:.0f} ms), run {outcome.run_id}")
    for hit, score in zip(outcome.hits, outcome.scores, strict=True):
        table.add_row(str(hit.rank), str(hit.frame_id), f"{hit.distance:.4f}", "" if score is None else f"{score:.3f}",
                      hit.source_uri, f"{hit.pts_seconds:.2f}", hit.path)
    stdout_console().print(table)
    if outcome.run_id is not None:
        stdout_console().print(f"label them: sisyphus label add {outcome.label} --search {outcome.run_id} "
                               "[--top N] [--negative]", soft_wrap=True, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command(name="discover")(discover)
