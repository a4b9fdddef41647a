"""`sisyphus label add|list|show|remove`: labels on frames, with their provenance."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stdout_console

app = typer.Typer(help="Label frames positive or negative, list labels, show one with its provenance, remove.",
                  no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
NameArgument = Annotated[str, typer.Argument(help="Label name, e.g. road-works.")]


@app.command()
def add(
    ctx: typer.Context,
    name: NameArgument,
    frames: Annotated[list[str] | None, typer.Option(
        "--frames", help="Frame ids to label (repeatable; comma-separated lists too: --frames 3,4,5).")] = None,
    search: Annotated[int | None, typer.Option("--search", help="Label the results of this stored search run "
                                               "(its run id).")] = None,
    top: Annotated[int | None, typer.Option("--top", help="With --search: only its first N results.")] = None,
    negative: Annotated[bool, typer.Option("--negative", help="Mark the frames as NOT showing the label.")] = False,
    from_scores: Annotated[bool, typer.Option("--from-scores", help="Turn the label's propagated scores "
                                              "(`sisyphus propagate`) into weak labels; manual labels are kept.")]
    = False,
    min_score: Annotated[float | None, typer.Option("--min-score", help="With --from-scores: the lowest score "
                                                    "that becomes a label.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="With --from-scores: the model the scores were "
                                              "propagated under (default: the only one).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Label frames: given ids, the results of a search run, or propagated scores. Labelling a frame again
    updates its row (positive/negative, provenance) instead of adding a second one."""
    from sisyphus_db.label.labels import (
        LabelError,
        add_labels,
        add_labels_from_scores,
        check_label_name,
        frames_of_run,
        parse_frame_ids,
    )

    name = check_label_name(name)
    given = sum([bool(frames), search is not None, from_scores])
    if given != 1:
        raise LabelError("give exactly one of --frames ID, --search RUN_ID and --from-scores")
    if top is not None and search is None:
        raise LabelError("--top applies to --search only")
    if (min_score is not None or model is not None) and not from_scores:
        raise LabelError("--min-score and --model apply to --from-scores only")
    if from_scores and min_score is None:
        raise LabelError("--from-scores needs --min-score S")
    if from_scores and negative:
        raise LabelError("--from-scores makes positive labels only; --negative does not apply")
    ids = parse_frame_ids(frames) if frames else []
    with database(ctx) as db:
        if from_scores:
            assert min_score is not None
            model_id = None
            if model is not None:
                from sisyphus_db.search.indexing import resolve_model

                model_id = resolve_model(db, model).id
            change = add_labels_from_scores(db, name, min_score, model_id=model_id)
            how = f"from propagated scores >= {min_score:g}"
        elif search is not None:
            ids = frames_of_run(db, search, top)
            if not ids:
                raise LabelError(f"search run {search} has no results to label")
            change = add_labels(db, name, ids, positive=not negative, run_id=search)
            how = f"from search run {search}"
        else:
            change = add_labels(db, name, ids, positive=not negative)
            how = "by id"
    if json_output:
        emit_json({**change.to_json(), "positive": not negative})
        return
    kind = "negative" if negative else "positive"
    skipped = f", {change.skipped} manual labels kept" if change.skipped else ""
    typer.echo(f"{name}: {change.added} frames labelled {kind}, {change.updated} updated ({how}){skipped}")


@app.command(name="list")
def list_(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Every label with its positive, negative, manual and propagated counts."""
    from sisyphus_db.label.labels import list_labels

    with database(ctx) as db:
        summaries = list_labels(db)
    if json_output:
        emit_json({"labels": [summary.to_json() for summary in summaries]})
        return
    if not summaries:
        typer.echo("no labels yet: `sisyphus label add NAME --frames ID`")
        return
    table = Table("label", "positives", "negatives", "manual", "propagated", "sources", "updated")
    for s in summaries:
        table.add_row(s.label, str(s.positives), str(s.negatives), str(s.manual), str(s.propagated), str(s.sources),
                      s.updated_at.strftime("%Y-%m-%d %H:%M") if s.updated_at else "")
    stdout_console().print(table)


@app.command()
def show(ctx: typer.Context, name: NameArgument, json_output: JsonOption = False) -> None:
    """One label: its positives and negatives, their sources and provenance (origin, run or rule, score,
    who, when)."""
    from sisyphus_db.label.labels import show_label

    with database(ctx) as db:
        detail = show_label(db, name)
    if json_output:
        emit_json(detail.to_json())
        return
    s = detail.summary
    out = stdout_console()
    out.print(f"{s.label}: {s.positives} positive, {s.negatives} negative ({s.manual} manual, {s.propagated} "
              f"propagated) in {s.sources} sources", soft_wrap=True, markup=False, highlight=False)
    table = Table("frame", "label", "origin", "from", "score", "by", "updated", "source", "time s", "path")
    for f in detail.frames:
        origin = f"run {f.run_id}" if f.run_id is not None else (f.rule or "")
        table.add_row(str(f.frame_id), "positive" if f.positive else "negative", f.origin, origin,
                      "" if f.score is None else f"{f.score:.3f}", f.created_by,
                      f.updated_at.strftime("%Y-%m-%d %H:%M"), f.source_uri, f"{f.pts_seconds:.2f}", f.path)
    out.print(table)


@app.command()
def remove(
    ctx: typer.Context,
    name: NameArgument,
    frames: Annotated[list[str] | None, typer.Option(
        "--frames", help="Only these frame ids (repeatable, comma lists too); default: the whole label.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a label from some frames, or the whole label (with its propagated scores)."""
    from sisyphus_db.label.labels import parse_frame_ids, remove_labels

    ids = parse_frame_ids(frames) if frames else None
    with database(ctx) as db:
        removed = remove_labels(db, name, ids)
    if json_output:
        emit_json({"label": name.strip(), "removed": removed})
        return
    typer.echo(f"{name.strip()}: removed from {removed} frames")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="label")
