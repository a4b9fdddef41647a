"""`sisyphus audio build` and the rendering of `sisyphus search --audio-of / --audio`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sisyphus_db.cli.context import database, emit_json, stdout_console

app = typer.Typer(help="Sound: one vector per second of every video's audio track "
                  "(VGGish with local weights, else log-mel).", no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    method: Annotated[str, typer.Option("--method", help="auto (vggish when SISYPHUS_VGGISH_WEIGHTS names a "
                                        "local weights file, else logmel), vggish or logmel.")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Per-second sound vectors of every ingested video that has none yet (videos without audio are skipped).

    Then `sisyphus search --audio-of FRAME_ID` or `sisyphus search --audio FILE`.
    """
    from sisyphus_db.cli.progress import StageProgress, progress_bars
    from sisyphus_db.temporal.audio_store import build_audio, sound_method

    chosen = sound_method(method)  # a bad method or weights file fails before the database is touched
    with database(ctx) as db:
        with progress_bars() as progress:
            report = build_audio(db, StageProgress(progress), method=chosen)
    if json_output:
        emit_json(report.to_json())
        return
    typer.echo(f"stored {report.seconds_added} seconds of sound from {report.videos - report.without_audio - report.failed} "
               f"videos ({report.method}) in {report.seconds:.1f} s; {report.without_audio} videos have no audio, "
               f"{report.failed} failed; {report.total} seconds in all")


def render_audio_search(ctx: typer.Context, *, frame: int | None, path: Path | None, k: int, save: str | None,
                        no_save: bool, json_output: bool) -> None:
    """`search --audio-of FRAME_ID` / `--audio FILE`: the moments that sound most alike."""
    from sisyphus_db.temporal.audio_store import search_sound

    with database(ctx) as db:
        outcome = search_sound(db, frame_id=frame, path=path, k=k, save=not no_save, name=save)
    if json_output:
        emit_json(outcome.to_json())
        return
    table = Table("rank", "distance", "source", "seconds", title=f"{len(outcome.hits)} moments (sound, "
                  f"{outcome.elapsed_ms:.0f} ms)" + (f", run {outcome.run_id}" if outcome.run_id else ""))
    for hit in outcome.hits:
        table.add_row(str(hit["rank"]), f"{hit['distance']:.4f}", hit["source_uri"],
                      f"{hit['start_seconds']:.0f}-{hit['end_seconds']:.0f}")
    stdout_console().print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audio")
