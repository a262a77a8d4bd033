"""`flash-restore bench mixed-size`: a shard mixing whole photos of many sizes with 64-px crops.

`workers.bench_mixed_size` measures (estimate against the local run, the Ray run's solver busy
fraction); this prints the table and writes its section of docs/benchmarks.md.
"""
from __future__ import annotations

from typing import List, Optional

import typer

from jobs.bench_cmd import print_table, write_section
from jobs.restore_cmd import REPO, SAMPLE_ARCHIVE, console


def bench_mixed_size(
    photos: int = typer.Option(8, "--photos", help="Whole dev photos among the crops"),
    batch_size: int = typer.Option(8, "--batch-size"),
    config: Optional[str] = typer.Option(None, "--config"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write", help="Markdown report path"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Estimate error and solver busy fraction on a mixed-size shard (targets ±15 %, ≥ 0.85)."""
    from workers import bench_mixed_size as bench   # lazy, as every command's compute: `--help` stays fast
    from workers.job_config import build_config

    if photos < 1:
        raise typer.BadParameter("--photos must be at least 1")
    cfg = build_config(config, None, False, batch_size, None, None, "local", None, set_)
    try:
        result = bench.run(cfg, str(SAMPLE_ARCHIVE), photos, log=console.print)
    except (ValueError, OSError) as exc:   # no calibration here, or the photo packages are missing
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    print_table("flash-restore bench mixed-size", ("figure", "value", "target"), bench.table_rows(result))
    command = (f"flash-restore bench mixed-size --photos {photos} --batch-size {batch_size}"
               + "".join(f" --set {s}" for s in set_ or []))
    write_section(write, "`flash-restore bench mixed-size`", bench.section(result, cfg, command))
