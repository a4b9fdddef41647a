"""`sisyphus activate`: make images findable before they are released (Active Indexing)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sisyphus_db.cli.context import (
    database,
    emit_json,
    settings,
    stderr_console,
    stdout_console,
)


def activate(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Images and folders to activate.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the activated images (same relative paths), "
                                      "each with a .activation.json manifest. Not inside an input folder.")],
    model: Annotated[str, typer.Option("--model", help="Embedding model whose features are activated.")]
    = "efficientnet-lite0",
    index: Annotated[str, typer.Option("--index", help="'registered': the model's faiss sidecar in the database; "
                                       "or a faiss factory (e.g. IVF4,PQ16x4) trained on the input images.")]
    = "registered",
    psnr: Annotated[float, typer.Option("--psnr", help="Lowest PSNR (dB) of an activated image, 20-80.")] = 43.0,
    iterations: Annotated[int, typer.Option("--iterations", help="Optimisation steps per image.")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="Adam step in [0, 1] pixel units.")] = 0.005,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images optimised together.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Perturb images imperceptibly (PSNR >= --psnr) so that their features sit on their quantized
    representation in a faiss index: edited copies of them are then found more often.

    Resumable: images whose output and manifest exist are skipped. An unreadable image is
    reported and the run goes on; the exit status is then 1.
    """
    from sisyphus_db.cli.progress import StageProgress, progress_bars

    from sisyphus_db.activate.optimise import ActivationSettings
    from sisyphus_db.activate.runner import (
        REGISTERED,
        ActivateOptions,
        plan_outputs,
        run_activation,
    )
    from sisyphus_db.devices import resolve_torch_device

    options = ActivateOptions(model=model, index=index.strip(), device=resolve_torch_device(device),
                              batch_size=batch_size,
                              settings=ActivationSettings(psnr=psnr, iterations=iterations, lr=lr))
    options.settings.check()
    plan_outputs(paths, out)  # bad paths fail before the database or the model is touched
    with progress_bars() as progress:
        stages = StageProgress(progress)
        if options.index == REGISTERED:
            from sisyphus_db.activate.registered import registered_index

            settings(ctx).ensure_home()
            with database(ctx) as db:
                loaded, info = registered_index(db, model)
            report = run_activation(paths, out, options, index=loaded, index_info=info, progress=stages)
        else:
            report = run_activation(paths, out, options, progress=stages)
    document = report.to_json()
    err = stderr_console()
    for failure in report.errors:
        err.print(failure["error"], markup=False, highlight=False, soft_wrap=True)
    if json_output:
        emit_json(document)
    else:
        mean = f", mean PSNR {document['mean_psnr']:.2f} dB" if document["mean_psnr"] is not None else ""
        stdout_console().print(
            f"{document['activated']} activated, {document['skipped']} already done, {len(report.errors)} failed"
            f"{mean}; {report.model}, index {report.index.get('factory')} ({report.index.get('kind')}); "
            f"{report.seconds:.1f} s -> {report.out}", soft_wrap=True, markup=False, highlight=False)
    if report.errors:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.command("activate")(activate)
