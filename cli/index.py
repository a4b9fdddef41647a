"""`sisyphus index build|update|status|verify|drop`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stderr_console, stdout_console
from sisyphus_db.cli.progress import StageProgress, progress_bars
from sisyphus_db.errors import InputError

app = typer.Typer(help="Build and maintain the ANN indexes (faiss sidecar, pgvector HNSW).", no_args_is_help=True)

ModelOption = Annotated[str | None, typer.Option("--model", help="Model whose vectors to index "
                                                 "(default: the only stored one).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
BackendOption = Annotated[str, typer.Option("--backend", help="faiss (sidecar file) or pgvector (HNSW index).")]
KindOption = Annotated[str, typer.Option("--kind", help="What the index holds: frames (one vector per frame) or "
                                         "regions (`sisyphus regions build`).")]
RayOption = Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Build on Ray: `--ray` alone "
                                               "starts a local Ray instance, `--ray HOST:PORT` joins a cluster "
                                               "(default address: $SISYPHUS_RAY_ADDRESS).")]


def _check_backend(backend: str) -> None:
    if backend not in ("faiss", "pgvector"):
        raise InputError(f"unknown --backend {backend!r}: expected faiss or pgvector")


def _check_kind(kind: str, backend: str = "faiss") -> None:
    from sisyphus_db.store.vectors import vector_table

    vector_table(kind)  # unknown kinds fail with the list of known ones
    if kind != "frames" and backend != "faiss":
        raise InputError(f"--kind {kind} indexes are faiss sidecars only")


@app.command()
def build(
    ctx: typer.Context,
    model: ModelOption = None,
    factory: Annotated[str, typer.Option("--factory", help="faiss factory string, or auto (flat / IVF-flat / "
                                         "IVF-PQ from the row count, dimension and memory).")] = "auto",
    train_size: Annotated[int | None, typer.Option("--train-size", min=1, help="Vectors to train on.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    target_recall: Annotated[float, typer.Option("--target-recall", help="recall@10 the tuned nprobe and "
                                                 "rerank depth must reach.")] = 0.95,
    backend: BackendOption = "faiss",
    kind: KindOption = "frames",
    ray: RayOption = None,
    shards: Annotated[int | None, typer.Option("--shards", min=1, help="With --ray: frame-id ranges added in "
                                               "parallel, then merged into one index (default: the cluster's "
                                               "CPUs).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Build (or rebuild) an index from the embeddings (or regions) table and register it."""
    from sisyphus_db.search.indexing import build_faiss_index, resolve_model
    from sisyphus_db.search.pgvector_index import build_pgvector_index

    _check_backend(backend)
    _check_kind(kind, backend)
    if ray is not None and (backend != "faiss" or kind != "frames"):
        raise InputError("--ray builds faiss indexes of frames only")
    if shards is not None and ray is None:
        raise InputError("--shards needs --ray")
    sharded: dict[str, Any] = {}
    with database(ctx) as db:
        stored = resolve_model(db, model)
        with progress_bars() as progress:
            if ray is not None:
                from sisyphus_db.distributed.index_job import run_ray_index_build

                ray_report = run_ray_index_build(db, stored, address=ray, shards=shards, factory=factory,
                                                 train_size=train_size, device=device, target_recall=target_recall,
                                                 progress=StageProgress(progress))
                report, sharded = ray_report.build, {"ray": ray_report.to_json()}
            elif backend == "faiss":
                report = build_faiss_index(db, stored, factory=factory, train_size=train_size, device=device,
                                           target_recall=target_recall, progress=StageProgress(progress), kind=kind)
            else:
                report = build_pgvector_index(db, stored, target_recall=target_recall,
                                              progress=StageProgress(progress))
    document = {**report.record.to_json(), "vectors": report.vectors, "seconds": round(report.seconds, 3),
                "reached_target": report.reached, "tuning": report.tune_table, **sharded}
    if json_output:
        emit_json(document)
        return
    record = report.record
    stdout_console().print(
        f"built {backend} index {record.factory} of {record.kind} for {record.model_name}: {record.ntotal} vectors in "
        f"{report.seconds:.1f} s; recall@10 {record.recall_at_10:.3f} with {_params_text(record.params)}",
        soft_wrap=True, markup=False)
    if not report.reached:
        stderr_console().print(f"warning: the target recall@10 {target_recall} was not reached", soft_wrap=True)


def _params_text(params: dict[str, Any]) -> str:
    shown = {key: params[key] for key in ("nprobe", "rerank_k", "ef_search") if params.get(key) is not None}
    return ", ".join(f"{key}={value}" for key, value in shown.items()) or "exact search"


@app.command()
def update(ctx: typer.Context, model: ModelOption = None, kind: KindOption = "frames",
           json_output: JsonOption = False) -> None:
    """Add the frames (or regions) above the watermark (and drop deleted ones) without retraining."""
    from sisyphus_db.search.indexing import resolve_model, update_faiss_index

    _check_kind(kind)
    with database(ctx) as db:
        report = update_faiss_index(db, resolve_model(db, model), kind=kind)
    if json_output:
        emit_json({**report.record.to_json(), "added": report.added, "removed": report.removed})
        return
    typer.echo(f"added {report.added} and removed {report.removed} vectors; the index holds "
               f"{report.record.ntotal} (watermark {report.record.watermark})")


@app.command()
def status(ctx: typer.Context, kind: Annotated[str | None, typer.Option(
        "--kind", help="Only the indexes of this kind (frames, regions, ...); default: all.")] = None,
           json_output: JsonOption = False) -> None:
    """List the indexes with their kind, factory, size, watermark, tuned parameters and measured recall."""
    from sisyphus_db.search.indexing import indexes_status

    with database(ctx) as db:
        records = [r for r in indexes_status(db) if kind is None or r.kind == kind]
    if json_output:
        emit_json([record.to_json() for record in records])
        return
    if not records:
        typer.echo("no indexes yet: run `sisyphus index build`")
        return
    table = Table("model", "backend", "kind", "factory", "vectors", "watermark", "params", "recall@10", "build s",
                  "device", "state")
    for r in records:
        table.add_row(r.model_name, r.backend, r.kind, r.factory, str(r.ntotal), str(r.watermark), _params_text(r.params),
                      f"{r.recall_at_10:.3f}" if r.recall_at_10 is not None else "-",
                      f"{r.build_seconds:.1f}" if r.build_seconds is not None else "-", r.device or "-", r.state)
    stdout_console().print(table)


@app.command()
def verify(ctx: typer.Context, model: ModelOption = None, kind: KindOption = "frames",
           json_output: JsonOption = False,
           full: Annotated[bool, typer.Option("--full", help="Compare every refine vector with the table "
                                              "(default: a random sample).")] = False) -> None:
    """Check the faiss file and its refine vectors (checksums, ids, values) against the registry and the table."""
    from sisyphus_db.search.index_verify import verify_faiss_index
    from sisyphus_db.search.indexing import build_command, resolve_model

    _check_kind(kind)
    with database(ctx) as db:
        report = verify_faiss_index(db, resolve_model(db, model), kind=kind, full=full)
    if json_output:
        emit_json({"ok": report.ok, "problems": report.problems, "pending": report.pending,
                   "index": report.record.to_json()})
    else:
        if report.ok:
            typer.echo(f"ok: {report.record.ntotal} vectors match the table"
                       + (f"; {report.pending} newer {kind} await `{build_command(kind, 'update')}`"
                          if report.pending else ""))
        for problem in report.problems:
            typer.echo(f"out of sync: {problem}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def drop(ctx: typer.Context, model: ModelOption = None, backend: BackendOption = "faiss",
         kind: KindOption = "frames") -> None:
    """Remove an index (its file or HNSW index, and its registry row). The vectors stay."""
    from sisyphus_db.search.indexing import drop_index, resolve_model

    _check_backend(backend)
    _check_kind(kind, backend)
    with database(ctx) as db:
        record = drop_index(db, resolve_model(db, model), backend, kind)
    of = "" if kind == "frames" else f" of {kind}"
    typer.echo(f"dropped the {backend} index{of} of {record.model_name}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="index")
