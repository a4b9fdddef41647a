"""`sisyphus eval instance`: find pasted objects among scenes, per method and per scale."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sisyphus_db.cli.context import database, emit_json, settings, stdout_console
from sisyphus_db.cli.progress import StageProgress, progress_bars


def instance(
    ctx: typer.Context,
    objects: Annotated[Path, typer.Option("--objects", help="Folder of object images (PNG alpha is used).")],
    scenes: Annotated[Path, typer.Option("--scenes", help="Folder of scene images; untouched, they are "
                                         "the distractors.")],
    per_object: Annotated[int, typer.Option("--per-object", min=1, help="Scenes each object is pasted into, "
                                            "per scale.")] = 3,
    scales: Annotated[str, typer.Option("--scales", help="Object widths as fractions of the scene's width.")]
    = "0.1,0.2,0.3",
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: global, regions, bow, "
                                         "bow+spatial+expansion.")] = "global,regions,bow,bow+spatial+expansion",
    model: Annotated[str, typer.Option("--model", help="Embedding model.")] = "efficientnet-lite0",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Places and scenes of the pastes.")] = 0,
    workdir: Annotated[Path | None, typer.Option("--workdir", help="Where the pasted frames go "
                                                 "(default: a temporary folder, removed after).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Paste each object into scenes at random places and scales, ingest them into a throw-away database,
    query with each object: mAP, r@10 and box IoU per method and scale (stored in eval_runs/eval_metrics)."""
    from sisyphus_db.evaluate.instance import (
        InstanceOptions,
        instance_eval,
        parse_scales,
    )

    options = InstanceOptions(per_object=per_object, scales=parse_scales(scales),
                              methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
                              model=model, device=device, seed=seed)
    options.check()
    with tempfile.TemporaryDirectory(prefix="sisyphus-instance-") as temporary:
        folder = workdir or Path(temporary) / "frames"
        with database(ctx) as db, progress_bars() as progress:
            report = instance_eval(settings(ctx), objects, scenes, options, folder, StageProgress(progress),
                                   record_in=db)
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    table = Table("method", "scale", "mAP", "r@10", "box IoU",
                  title=f"{report.queries} objects in {report.frames} frames, run {report.run_id}")
    for method, figures in report.methods.items():
        for scale, values in [("all", figures), *figures["per_scale"].items()]:
            iou = values["iou"]
            table.add_row(method, scale, f"{values['map']:.3f}", f"{values['r@10']:.3f}",
                          "-" if iou is None else f"{iou:.3f}")
    stdout_console().print(table)


def register(root: typer.Typer) -> None:
    from sisyphus_db.cli.evaluate import app

    app.command(name="instance")(instance)
