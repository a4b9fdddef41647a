"""`sisyphus search` and `sisyphus knn-graph`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stderr_console, stdout_console
from sisyphus_db.errors import InputError

RESULT_COLUMNS = ("rank", "frame_id", "distance", "path", "source_uri", "pts_seconds", "source_id", "frame_index")


def search(
    ctx: typer.Context,
    image: Annotated[list[Path] | None, typer.Option("--image", help="Query image (repeat to average several).")] = None,
    frame: Annotated[int | None, typer.Option("--frame", help="Query with a stored frame's vector.")] = None,
    vector: Annotated[Path | None, typer.Option("--vector", help="Query vector in a .npy file.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="An ImageNet class name (e.g. 'motor scooter', "
                                             "'street sign'), searched through the model's classifier.")] = None,
    method: Annotated[str, typer.Option("--method", help="global (pooled frame vectors), regions (region vectors: "
                                        "`sisyphus regions build`) or bow (visual words: `sisyphus bow build`); "
                                        "regions and bow return the matched `box`; phash: nearest perceptual "
                                        "hashes (`sisyphus hashes build`).")] = "global",
    box: Annotated[str | None, typer.Option("--box", help="Search for this part of the --image: x0,y0,x1,y1 "
                                            "in pixels.")] = None,
    focus: Annotated[str | None, typer.Option("--focus", help="An ImageNet class to focus the --image query on "
                                              "(its classifier weights re-weight the feature map).")] = None,
    expand: Annotated[int, typer.Option("--expand", help="--method bow: expand the query with the N best "
                                        "localised regions.")] = 0,
    k: Annotated[int, typer.Option("--k", help="Number of results.")] = 10,
    where: Annotated[str | None, typer.Option("--where", help="SQL filter over frames, sources and tags, e.g. "
                                              "\"sources.tags->>'city' = 'berlin' AND frames.pts_seconds > 60\".")] = None,
    backend: Annotated[str, typer.Option("--backend", help="faiss, pgvector or exact.")] = "faiss",
    nprobe: Annotated[int | None, typer.Option("--nprobe", help="IVF lists to probe (default: tuned at build).")] = None,
    per_source: Annotated[int | None, typer.Option("--per-source", help="At most N results per source.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model to search (default: the only stored one).")] = None,
    device: Annotated[str, typer.Option("--device", help="Device to embed --image queries: auto, cpu or cuda.")] = "auto",
    save: Annotated[str | None, typer.Option("--save", help="Name the stored search run.")] = None,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not store the run in search_runs.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
    csv_output: Annotated[bool, typer.Option("--csv", help="Print CSV on stdout.")] = False,
    video: Annotated[Path | None, typer.Option("--video", help="Query video clip: the videos and time ranges "
                                               "most like it (segments, then frame alignment).")] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Query with a stored video's range, "
                                                "SOURCE_ID:START-END in seconds.")] = None,
    window: Annotated[float | None, typer.Option("--window", help="--video/--segment: segment window to "
                                                 "search (default: the most stored one).")] = None,
    video_fps: Annotated[float, typer.Option("--video-fps", help="--video: frames per second decoded from the "
                                             "query clip.")] = 2.0,
    audio_of: Annotated[int | None, typer.Option("--audio-of", help="The moments that sound like the second this "
                                                 "frame was shown in (`sisyphus audio build`).")] = None,
    audio: Annotated[Path | None, typer.Option("--audio", help="The moments that sound like this audio or video "
                                               "file.")] = None,
) -> None:
    """Find the frames nearest to a query image, frame, vector or class name; results are stored for SQL.

    With --video or --segment: the videos and time ranges most like a clip.
    """
    if video is not None or segment is not None:  # video-to-video search (sisyphus_db.temporal)
        from sisyphus_db.cli.segments import render_video_search

        return render_video_search(ctx, video=video, segment=segment, model=model, k=k, window=window,
                                   fps=video_fps, device=device, save=save, no_save=no_save, json_output=json_output)
    if audio_of is not None or audio is not None:  # sound (sisyphus_db.temporal)
        from sisyphus_db.cli.audio import render_audio_search

        return render_audio_search(ctx, frame=audio_of, path=audio, k=k, save=save, no_save=no_save,
                                   json_output=json_output)
    if method == "phash":  # perceptual hashes (sisyphus_db.temporal)
        from sisyphus_db.cli.hashes import render_hash_search

        return render_hash_search(ctx, images=image or [], frame=frame, k=k, save=save, no_save=no_save,
                                  json_output=json_output)
    from sisyphus_db.search.engine import SearchRequest, search as run_search, validate_request
    from sisyphus_db.search.indexing import resolve_model
    from sisyphus_db.search.queries import build_query

    if json_output and csv_output:
        raise InputError("choose one of --json and --csv")
    request = SearchRequest(k=k, backend=backend, where=where, nprobe=nprobe, per_source=per_source,
                            save=not no_save, name=save)
    validate_request(request)
    from sisyphus_db.local.grid import parse_box
    from sisyphus_db.local.search import LocalRequest, local_search, validate_local

    local = LocalRequest(method=method, box=parse_box(box) if box is not None else None, focus=focus, expand=expand)
    if local.is_local:
        if frame is not None or vector is not None or text is not None:
            raise InputError("--method, --box, --focus and --expand take an --image query")
        validate_local(local, request, len(image or []))
    with database(ctx) as db:
        stored = resolve_model(db, model)
        if local.is_local:
            outcome = local_search(db, stored, (image or [])[0], request, local, device=device)
        else:
            query = build_query(db, stored, images=image or [], frame_id=frame, vector_file=vector, text=text,
                                device=device)
            outcome = run_search(db, stored, query, request)
    for warning in outcome.warnings:
        stderr_console().print(f"warning: {warning}", soft_wrap=True, markup=False)
    if json_output:
        emit_json(outcome.to_json())
        return
    if csv_output:
        writer = csv.writer(sys.stdout)
        boxed = any(hit.box is not None for hit in outcome.hits)
        writer.writerow(RESULT_COLUMNS + (("box",) if boxed else ()))
        for hit in outcome.hits:
            row = hit.to_json()
            writer.writerow([row[column] for column in RESULT_COLUMNS]
                            + ([" ".join(map(str, hit.box)) if hit.box else ""] if boxed else []))
        return
    table = Table("rank", "distance", "source", "time s", "path", title=f"{len(outcome.hits)} results "
                  f"({outcome.backend}, {outcome.elapsed_ms:.0f} ms)" + (f", run {outcome.run_id}" if outcome.run_id else ""))
    for hit in outcome.hits:
        table.add_row(str(hit.rank), f"{hit.distance:.4f}", hit.source_uri, f"{hit.pts_seconds:.2f}", hit.path)
    stdout_console().print(table)


def knn_graph(
    ctx: typer.Context,
    k: Annotated[int, typer.Option("--k", min=1, max=1000, help="Neighbours per frame.")] = 10,
    model: Annotated[str | None, typer.Option("--model", help="Model (default: the only stored one).")] = None,
    nprobe: Annotated[int | None, typer.Option("--nprobe", help="IVF lists to probe (default: tuned at build).")] = None,
    ray: Annotated[str | None, typer.Option("--ray", metavar="[ADDRESS]", help="Split the frames over Ray tasks: "
                                            "`--ray` alone starts a local Ray instance, `--ray HOST:PORT` joins a "
                                            "cluster (default: $SISYPHUS_RAY_ADDRESS).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Search every frame against the faiss index in bulk and store the neighbour graph in knn_edges."""
    from sisyphus_db.search.indexing import resolve_model
    from sisyphus_db.search.knn_graph import build_knn_graph

    with database(ctx) as db:
        if ray is not None:  # the same graph, computed by Ray tasks (sisyphus_db.distributed.knn_job)
            from sisyphus_db.distributed.knn_job import run_ray_knn_graph

            report = run_ray_knn_graph(db, resolve_model(db, model), k=k, nprobe=nprobe, address=ray)
        else:
            report = build_knn_graph(db, resolve_model(db, model), k=k, nprobe=nprobe)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"stored {report.edges} edges for {report.frames} frames (k={k}) in {report.seconds:.1f} s "
               f"(search {report.search_seconds:.1f} s); query them in the knn_edges table")


def register(app: typer.Typer) -> None:
    app.command(name="search")(search)
    app.command(name="knn-graph")(knn_graph)
