"""`flash-restore bench photo-families`: JPEG and super-resolution on whole dev photos.

`workers.bench_photo_families` measures; this prints the table and writes its section of docs/benchmarks.md.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from jobs.bench_cmd import print_table, write_section
from jobs.restore_cmd import REPO, console


def bench_photo_families(
    photos: int = typer.Option(3, "--photos", help="Whole dev photos"),
    short: int = typer.Option(128, "--short", help="The photos' short side after restoration, px"),
    big: bool = typer.Option(False, "--big", help="Also a 300×200 copy restored to 1200×800"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write", help="Markdown report path"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """JPEG q10 and ×2/×4 super-resolution on whole photos (target: +1 dB over the input, blocking halved)."""
    from workers import bench_photo_families as bench   # lazy, as every command's compute: `--help` stays fast

    if photos < 1 or short < 64:
        raise typer.BadParameter("--photos ≥ 1 and --short ≥ 64")
    try:
        result = bench.run(list(set_ or []), photos, short, big, log=console.print)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    print_table("flash-restore bench photo-families", bench.COLUMNS, bench.table_rows(result))
    command = (f"flash-restore bench photo-families --photos {photos} --short {short}" + " --big" * big
               + "".join(f" --set {s}" for s in set_ or []))
    write_section(write, "`flash-restore bench photo-families`", bench.section(result, command))
