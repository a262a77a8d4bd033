"""`flash-restore bench estimate` and `bench budget` (`workers.bench_estimate` measures).

Each writes its section of docs/benchmarks.md.
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from jobs.bench_cmd import write_section
from jobs.restore_cmd import REPO, SAMPLE_ARCHIVE, console


def bench_estimate(
    sizes: str = typer.Option("32,500", "--sizes", help="Archive sizes (32 = the committed sample archive)"),
    batch_size: int = typer.Option(8, "--batch-size"),
    config: Optional[str] = typer.Option(None, "--config"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Estimate, then restore, each archive; report predicted / actual solve seconds (target ±15 %)."""
    from workers import bench_estimate as bench   # lazy, as every command's compute: `--help` stays fast
    from workers.job_config import build_config

    cfg = build_config(config, None, False, batch_size, None, None, "local", None, set_)
    try:
        rows = bench.estimate_vs_actual(cfg, str(SAMPLE_ARCHIVE), [int(s) for s in sizes.split(",") if s.strip()],
                                        log=console.print)
    except ValueError as exc:   # no calibration for this device, solver and models
        raise typer.BadParameter(str(exc)) from None
    table = Table(title="flash-restore bench estimate: predicted vs actual solve seconds")
    for col in ("samples", "predicted NFE", "actual NFE", "predicted s", "actual s", "error"):
        table.add_column(col)
    for n, pn, an, p, a, e in rows:
        table.add_row(str(n), f"{pn:.1f}", f"{an:.1f}", f"{p:.1f}", f"{a:.1f}", f"{e:+.1%}")
    console.print(table)
    command = f"flash-restore bench estimate --sizes {sizes} --batch-size {batch_size}"
    write_section(write, "`flash-restore bench estimate`", bench.estimate_section(rows, cfg, command))


def bench_budget(
    samples: int = typer.Option(48, "--samples", help="Archive size"),
    fraction: float = typer.Option(0.5, "--fraction", help="Budget as a fraction of the predicted solve time"),
    batch_size: int = typer.Option(8, "--batch-size"),
    config: Optional[str] = typer.Option(None, "--config"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Run with --budget-hours set to a fraction of the prediction, then resume: overshoot (target ≤ 10 %)."""
    from workers import bench_estimate as bench
    from workers.job_config import build_config

    cfg = build_config(config, None, False, batch_size, None, None, "local", None, set_)
    try:
        r = bench.budget_run(cfg, str(SAMPLE_ARCHIVE), samples, fraction)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    table = Table(title="flash-restore bench budget")
    for col in ("budget s", "solve s spent", "overshoot", "restored in run 1", "restored on resume", "complete"):
        table.add_column(col)
    table.add_row(f"{r['budget_s']:.1f}", f"{r['spent']:.1f}", f"{r['over']:+.1%}", str(r["first_ok"]),
                  str(r["rest_ok"]), str(r["complete"]))
    console.print(table)
    command = f"flash-restore bench budget --samples {samples} --fraction {fraction} --batch-size {batch_size}"
    write_section(write, "`flash-restore bench budget`", bench.budget_section(r, cfg, samples, fraction, command))
