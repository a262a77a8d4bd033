"""`flash-restore bench any-size`: whole photos at their own size, every arm side by side.

`workers.bench_any_size` measures; this prints the table and writes its section of
docs/benchmarks.md.
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from jobs.bench_cmd import write_section
from jobs.restore_cmd import REPO, console


def bench_any_size(
    short: int = typer.Option(192, "--short", help="Short side the dev photos are scaled to (px)"),
    photos: int = typer.Option(8, "--photos", help="How many dev photos"),
    arms: Optional[str] = typer.Option(None, "--arms", help="Comma-separated arms (default: all)"),
    speed_start: int = typer.Option(20, "--speed-start", help="Fixed start step of the time-vs-area run; −1 skips it"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write", help="Markdown report path"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Starts per region vs per image, tiling modes, stitched 64-px crops; seconds per megapixel."""
    from workers import bench_any_size as bench   # lazy, as every command's compute: `--help` stays fast
    from workers.job_config import build_config

    chosen = list(bench.ARMS) if arms is None else [a.strip() for a in arms.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in bench.ARMS]
    if unknown or short < 8 or photos < 1:
        console.print(f"[red]error:[/red] arms must be among {list(bench.ARMS)} (got {unknown}), --short ≥ 8, "
                      "--photos ≥ 1")
        raise typer.Exit(1)
    sets = ["models.severity.varying_blur=models/severity-gaussian_blur", *(set_ or [])]
    try:
        build_config(None, None, False, 1, None, None, "local", None, sets)   # config errors before compute
        result = bench.run_arms(short, photos, chosen, sets, speed_start, log=console.print)
    except (RuntimeError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    table = Table(title="flash-restore bench any-size")
    for col in bench.COLUMNS:
        table.add_column(col)
    for row in bench.table_rows(result):
        table.add_row(*row)
    console.print(table)
    command = (f"flash-restore bench any-size --short {short} --photos {photos} --speed-start {speed_start}"
               + (f" --arms '{arms}'" if arms else "") + "".join(f" --set {s}" for s in set_ or []))
    write_section(write, "`flash-restore bench any-size`", bench.section(result, command))
