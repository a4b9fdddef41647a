"""Rendering of `sisyphus eval copydetect --activate`: passive and active figures side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from sisyphus_db.cli.context import database, emit_json, settings, stdout_console

_SHOWN = ("r@1", "r@10", "uap")


def copydetect_active(ctx: typer.Context, paths: list[Path], options: Any, *, psnr: float, iterations: int,
                      lr: float, json_output: bool) -> None:
    from sisyphus_db.cli.progress import StageProgress, progress_bars

    from sisyphus_db.activate.optimise import ActivationSettings
    from sisyphus_db.evaluate.copydetect_active import run_copydetect_active

    activation = ActivationSettings(psnr=psnr, iterations=iterations, lr=lr)
    activation.check()
    settings(ctx).ensure_home()
    with database(ctx) as db, progress_bars() as progress:
        stages = StageProgress(progress)
        report = run_copydetect_active(db, paths, options, activation, stages, stages)
    document = report.to_json()
    if json_output:
        emit_json(document)
        return
    out = stdout_console()
    passive, active = document["passive"], document["active"]
    out.print(f"{passive['references']} references, {passive['queries']} transformed queries, "
              f"{passive['distractors']} distractors; {passive['model']}; "
              f"{'exact rerank' if report.rerank else 'quantized distances (no rerank)'}; "
              f"eval runs {passive['run_id']} (passive) and {active['run_id']} (active)", soft_wrap=True, markup=False)
    for before, after in zip(passive["results"], active["results"], strict=True):
        title = f"{before['backend']} {before['factory']}" if before["factory"] else before["backend"]
        summary = document["activation"].get(str(before["factory"])) or next(iter(document["activation"].values()))
        table = Table("transformation", *(f"{key} {side}" for key in _SHOWN for side in ("passive", "active")),
                      title=f"{title}: activated at mean PSNR {_db(summary['mean_psnr'])} "
                            f"(SSIM {summary['mean_ssim']:.4f}, {summary['unchanged']} unchanged)")
        for name in ["overall", *before["per_transformation"]]:
            p = before["overall"] if name == "overall" else before["per_transformation"][name]
            a = after["overall"] if name == "overall" else after["per_transformation"][name]
            table.add_row(name, *(f"{values[key]:.3f}" for key in _SHOWN for values in (p, a)))
        out.print(table)


def _db(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} dB"
