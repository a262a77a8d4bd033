"""`flash-restore bench blind`: blind parameters against the true ones on the same images.

`workers.bench_blind` measures; this prints the table and writes its section of docs/benchmarks.md.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from jobs.bench_cmd import print_table, write_section
from jobs.restore_cmd import REPO, console


def bench_blind(
    crops: int = typer.Option(32, "--crops", help="Dev crops (64 px)"),
    photos: int = typer.Option(2, "--photos", help="Whole dev photos (0: none)"),
    short: int = typer.Option(128, "--short", help="The photos' short side, px"),
    varying: int = typer.Option(0, "--varying", help="Whole dev photos with a varying blur of random corners (0: none)"),
    batch_size: int = typer.Option(8, "--batch-size"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write", help="Markdown report path"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Blind Gaussian blur (and with --varying, varying blur) against the true parameters (targets: PSNR
    within 0.5 dB, Spearman ≥ 0.9)."""
    from workers import bench_blind as bench   # lazy, as every command's compute: `--help` stays fast

    if crops < 3 or photos < 0 or varying < 0 or short < 64:
        raise typer.BadParameter("--crops ≥ 3, --photos ≥ 0, --varying ≥ 0 and --short ≥ 64")
    try:
        result = bench.run(list(set_ or []), crops, photos, short, batch_size, log=console.print, varying=varying)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    print_table("flash-restore bench blind", ("figure", "dev crops", "whole dev photos", "varying blur photos", "target"),
                bench.table_rows(result))
    command = (f"flash-restore bench blind --crops {crops} --photos {photos} --short {short} --varying {varying}"
               + "".join(f" --set {s}" for s in set_ or []))
    write_section(write, "`flash-restore bench blind`", bench.section(result, command))
