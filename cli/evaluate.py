"""`sisyphus eval copydetect` and `sisyphus eval knn`: retrieval and copy-detection metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, settings, stdout_console

app = typer.Typer(help="Retrieval and copy-detection metrics on your own images (stored in eval_runs/eval_metrics).",
                  no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
WorkersOption = Annotated[int | None, typer.Option("--workers", min=1, help="Decoding processes for the ingest.")]


@app.command()
def copydetect(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Reference images and folders (they are ingested).")],
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated: exact, faiss, pgvector.")]
    = "exact,faiss",
    factories: Annotated[list[str] | None, typer.Option(
        "--factories", help="faiss factories to compare, separated by ';' or repeated (factory strings hold "
        "commas), e.g. \"auto;IVF64,PQ16\".")] = None,
    distractors: Annotated[int, typer.Option("--distractors", min=0, help="Generated non-matching queries for "
                                             "µAP.")] = 20,
    combinations: Annotated[int, typer.Option("--combinations", min=1, help="Random combinations of 2-3 "
                                              "transformations per reference.")] = 2,
    max_references: Annotated[int | None, typer.Option("--max-references", min=1, help="Use only the first N "
                                                       "reference images.")] = None,
    model: Annotated[str, typer.Option("--model", help="Embedding model.")] = "efficientnet-lite0",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random transformations.")] = 0,
    device: DeviceOption = "auto",
    workers: WorkersOption = None,
    rerank: Annotated[bool, typer.Option("--rerank/--no-rerank", help="Re-rank faiss results exactly (default); "
                                         "--no-rerank ranks by the index's own quantized distances.")] = True,
    activate: Annotated[bool, typer.Option("--activate", help="Also activate the references toward each faiss "
                                           "factory's quantizer and compare passive and active side by side.")]
    = False,
    psnr: Annotated[float, typer.Option("--psnr", help="With --activate: lowest PSNR (dB) of the activated "
                                        "references.")] = 43.0,
    iterations: Annotated[int, typer.Option("--iterations", help="With --activate: optimisation steps.")] = 10,
    lr: Annotated[float, typer.Option("--lr", help="With --activate: Adam step in [0, 1] pixel units.")] = 0.005,
    json_output: JsonOption = False,
) -> None:
    """Copy detection (Active Indexing protocol): r@1, r@10, r@100, MRR and µAP per transformation.

    The reference images are ingested; each is transformed with every augmentation (rotations,
    crops, blur, JPEG, colour, flip, text, random combinations) into queries that are embedded
    in memory, never stored, and searched through each backend.
    """
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.evaluate.copydetect import CopyDetectOptions, run_copydetect
    from sisyphus_db.evaluate.retrieval import parse_backends, split_factories

    specs = parse_backends(backends, split_factories(factories or ["auto"]))
    options = CopyDetectOptions(model=model, device=resolve_torch_device(device), backends=tuple(specs),
                                distractors=distractors, combinations=combinations, max_references=max_references,
                                seed=seed, workers=workers, rerank=rerank)
    if activate:
        from sisyphus_db.cli.evaluate_active import copydetect_active

        copydetect_active(ctx, paths, options, psnr=psnr, iterations=iterations, lr=lr, json_output=json_output)
        return
    settings(ctx).ensure_home()
    with database(ctx) as db:
        with progress_bars() as progress:
            stages = StageProgress(progress)
            report = run_copydetect(db, paths, options, stages, stages)
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    out = stdout_console()
    out.print(f"{report.references} references, {report.queries} transformed queries, {report.distractors} "
              f"distractors; {report.model}; stored as eval run {report.run_id}", soft_wrap=True)
    for result in document["results"]:
        table = Table("transformation", "r@1", "r@10", "r@100", "mrr", "µAP", "queries",
                      title=_backend_title(result))
        for name, values in [("overall", result["overall"]), *result["per_transformation"].items()]:
            table.add_row(name, *(f"{values[key]:.3f}" for key in ("r@1", "r@10", "r@100", "mrr", "uap")),
                          str(values["queries"]))
        out.print(table)


def _backend_title(result: dict[str, Any]) -> str:
    if result["factory"] and result.get("requested") and result["requested"] != result["factory"]:
        return f"{result['backend']} {result['factory']} (asked: {result['requested']})"
    return f"{result['backend']} {result['factory']}" if result["factory"] else result["backend"]


@app.command()
def knn(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Folder with one subfolder of images per class.")],
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours that vote.")] = 5,
    models: Annotated[str, typer.Option("--models", help="Comma-separated embedding models to compare.")]
    = "efficientnet-lite0",
    backends: Annotated[str, typer.Option("--backends", help="Comma-separated: exact, faiss, pgvector.")] = "exact",
    factories: Annotated[list[str] | None, typer.Option(
        "--factories", help="faiss factories, separated by ';' or repeated.")] = None,
    device: DeviceOption = "auto",
    workers: WorkersOption = None,
    videos: Annotated[bool, typer.Option("--videos", help="Classify whole videos (class folders of videos) by "
                                         "frame features, segments, colour, sound and their combination.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Leave-one-out k-NN class accuracy of a labelled folder tree (class = folder name), per model and backend."""
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.errors import InputError
    from sisyphus_db.evaluate.knn_eval import KnnEvalOptions, run_knn_eval
    from sisyphus_db.evaluate.retrieval import parse_backends, split_factories

    if videos:  # whole videos, per descriptor (sisyphus_db.evaluate.knn_videos)
        from sisyphus_db.cli.segments import render_knn_videos

        return render_knn_videos(ctx, path=path, k=k, model=models.split(",")[0].strip(), device=device,
                                 workers=workers, json_output=json_output)
    names = tuple(dict.fromkeys(name.strip() for name in models.split(",") if name.strip()))
    if not names:
        raise InputError("--models is empty: give at least one model name")
    options = KnnEvalOptions(k=k, models=names, backends=tuple(parse_backends(backends, split_factories(
        factories or ["auto"]))), device=resolve_torch_device(device), workers=workers)
    settings(ctx).ensure_home()
    with database(ctx) as db:
        with progress_bars() as progress:
            stages = StageProgress(progress)
            report = run_knn_eval(db, path, options, stages, stages)
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    classes = ", ".join(f"{name} ({count})" for name, count in report.classes.items())
    out = stdout_console()
    out.print(f"{report.images} images in {len(report.classes)} classes: {classes}; k={k}; "
              f"stored as eval run {report.run_id}", soft_wrap=True, markup=False)
    labels = list(report.classes)
    table = Table("model", "backend", "accuracy", *labels, title=f"leave-one-out {k}-NN accuracy")
    for result in document["results"]:
        backend = f"{result['backend']} {result['factory']}" if result["factory"] else result["backend"]
        table.add_row(result["model"], backend, f"{result['accuracy']:.3f}",
                      *(f"{result['per_class'].get(label, 0.0):.3f}" for label in labels))
    out.print(table)


@app.command(name="discover")
def discover_eval(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Folder with one subfolder of images per class.")],
    label: Annotated[str | None, typer.Option("--label", help="Only this class (default: every class).")] = None,
    rounds: Annotated[int, typer.Option("--rounds", help="Discover rounds at most per class and method.")] = 30,
    k: Annotated[int, typer.Option("--k", help="Frames reviewed per round.")] = 10,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: rocchio, multi, classifier, expand.")]
    = "rocchio,multi,classifier,expand",
    model: Annotated[str, typer.Option("--model", help="Embedding model.")] = "efficientnet-lite0",
    device: DeviceOption = "auto",
    workers: WorkersOption = None,
    json_output: JsonOption = False,
) -> None:
    """Simulated reviewer on a labelled folder tree: from one positive of each class, discover rounds of K;
    frames reviewed to reach 50 %, 80 % and all of the class per method, against one query and random order."""
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.devices import resolve_torch_device
    from sisyphus_db.evaluate.discover_eval import DiscoverEvalOptions, run_discover_eval

    names = tuple(dict.fromkeys(name.strip() for name in methods.split(",") if name.strip()))
    options = DiscoverEvalOptions(label=label, rounds=rounds, k=k, methods=names, model=model,
                                  device=resolve_torch_device(device), workers=workers)
    options.check()
    settings(ctx).ensure_home()
    with database(ctx) as db:
        with progress_bars() as progress:
            report = run_discover_eval(db, path, options, StageProgress(progress))
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    out = stdout_console()
    classes = ", ".join(f"{name} ({count})" for name, count in report.classes.items())
    out.print(f"{report.images} images in {len(report.classes)} classes: {classes}; rounds of {k}; "
              f"stored as eval run {report.run_id}", soft_wrap=True, markup=False)
    table = Table("class", "method", "found", "50 %", "80 %", "100 %", "one query 80 %", "random 80 %",
                  title="frames reviewed to reach each share of the class")
    for r in document["results"]:
        table.add_row(r["class"], r["method"], f"{r['found']}/{r['relevant']}",
                      *(_reached(r["reached"][key]) for key in ("50%", "80%", "100%")),
                      _reached((r["single"] or {}).get("80%")), f"{r['random']['80%']:.0f}")
    out.print(table)


def _reached(value: int | None) -> str:
    return "-" if value is None else str(value)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")
