"""Rich progress on stderr for the evaluation and demo commands (the library only calls back)."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sisyphus_db.cli.context import stderr_console


def progress_bars() -> Progress:
    console = stderr_console()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal)


class StageProgress:
    """Library progress callback (stage, advance, total) and ingest observer, as Rich tasks."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, advance: int, total: int | None) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        elif total is not None:
            self.progress.update(self.tasks[stage], total=total)
        if advance:
            self.progress.advance(self.tasks[stage], advance)

    # The ingest runner's observer protocol.
    def sources_planned(self, total: int) -> None:
        self("ingest: sources", 0, total)

    def source_finished(self) -> None:
        self("ingest: sources", 1, None)

    def frames_stored(self, count: int) -> None:
        self("ingest: frames stored", count, None)
