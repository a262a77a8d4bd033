"""`flash-restore estimate`: the cost of a restore job before running it (`workers.estimate`).

Prints a table and writes the report as JSON; `predicted_solve_seconds` is comparable with
`stages.solve.busy_seconds` in the job's stats.json.
"""
from __future__ import annotations

import json
from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import console


def estimate(
    input: str = typer.Option(..., "--input", help="WebDataset shards: folder, glob, brace pattern; local or s3://"),
    sample_fraction: float = typer.Option(1.0, "--sample-fraction", help="Seeded fraction of samples to look at"),
    device: Optional[str] = typer.Option(None, "--device", help="Price for this device class (cpu, h100, a100, …)"),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="Device price, for cost"),
    output: str = typer.Option("estimate.json", "--output", help="JSON report"),
    config: Optional[str] = typer.Option(None, "--config"),
    solver: Optional[str] = typer.Option(None, "--solver"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Config override section.key=value"),
):
    """Predict start steps, NFE, solve seconds and cost per solver without restoring anything."""
    import fsspec

    from workers.estimate import build_report   # lazy, as every command's compute: `--help` stays fast
    from pipeline.solvers import restoring_solvers
    from workers.job_config import build_config, preflight

    try:
        if not 0 < sample_fraction <= 1:
            raise ValueError(f"--sample-fraction must be in (0, 1], got {sample_fraction}")
        if price_per_hour is not None and price_per_hour < 0:
            raise ValueError(f"--price-per-hour must be ≥ 0, got {price_per_hour}")
        cfg = build_config(config, solver, False, None, None, None, "local", None, set_)
        shards = preflight(cfg, input)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    report = build_report(cfg, input, shards, sample_fraction, device, price_per_hour, restoring_solvers())
    with fsspec.open(output, "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    show(report, cfg.solver.name, output)


def show(report: dict, main: str, output: str) -> None:
    table = Table(title=f"flash-restore estimate on {report['device']}: {report['valid']} valid of "
                        f"{report['samples_seen']} samples looked at (fraction {report['sample_fraction']})")
    for col in ("solver", "mean NFE", "baseline NFE", "tile-steps", "predicted solve s", "cost"):
        table.add_column(col)
    for name, s in report["solvers"].items():
        secs = s["predicted_solve_seconds"]
        table.add_row(name + (" (config)" if name == main else ""), str(s["mean_nfe"]), str(s["baseline_nfe"]),
                      str(s["predicted_tile_steps_total"]), f"{secs:.1f}" if isinstance(secs, float) else "missing (no calibration)",
                      str(s.get("predicted_cost", "–")))
    console.print(table)
    hist = report["solvers"][main]["start_step_histogram"]
    console.print("start steps (" + main + "): " + ", ".join(f"{b}-{b + 9}: {n}" for b, n in hist.items()))
    if report["invalid"]:
        console.print(f"invalid samples by kind: {report['invalid']}")
    console.print(f"written: {output}")
