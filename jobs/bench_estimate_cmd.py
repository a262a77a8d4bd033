"""`flash-restore bench estimate` and `bench budget`: predicted against actual solve time, and budget adherence.

For each archive size it runs `estimate` (severity only, the calibration table) and then
the restore job itself on the local engine, and compares `predicted_solve_seconds` with the
job's `stages.solve.busy_seconds`. Writes its section of docs/benchmarks.md.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from jobs.bench_cmd import make_archive, write_section
from jobs.restore_cmd import REPO, SAMPLE_ARCHIVE, console

TARGET = 0.15


def predicted(cfg, archive: str) -> tuple[float, dict]:
    """`estimate`'s predicted solve seconds for the config's solver (and the solver's report)."""
    from workers.estimate import build_report
    from pipeline.io.shards import list_shards

    report = build_report(cfg, archive, list_shards(archive))["solvers"][cfg.solver.name]
    if isinstance(report["predicted_solve_seconds"], str):
        raise typer.BadParameter(report["predicted_solve_seconds"])
    return report["predicted_solve_seconds"], report


def bench_estimate(
    sizes: str = typer.Option("32,500", "--sizes", help="Archive sizes (32 = the committed sample archive)"),
    batch_size: int = typer.Option(8, "--batch-size"),
    config: Optional[str] = typer.Option(None, "--config"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Estimate, then restore, each archive; report predicted / actual solve seconds (target ±15 %)."""
    from workers.job_config import build_config

    from workers.execute import execute

    cfg = build_config(config, None, False, batch_size, None, None, "local", None, set_)
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-estimate-"))
    rows = []
    for n in [int(s) for s in sizes.split(",") if s.strip()]:
        archive = str(SAMPLE_ARCHIVE) if n == 32 else make_archive(str(SAMPLE_ARCHIVE), n, tmp / f"a{n}")
        seconds, report = predicted(cfg, archive)
        summary = execute(cfg, archive, str(tmp / f"out{n}"))
        actual = summary["stages"]["solve"]["busy_seconds"]
        rows.append((n, report["mean_nfe"], summary["mean_nfe"], seconds, actual, seconds / actual - 1))
        console.print(f"{n} samples: predicted {seconds:.1f} s, actual {actual:.1f} s")
    table = Table(title="flash-restore bench estimate: predicted vs actual solve seconds")
    for col in ("samples", "predicted NFE", "actual NFE", "predicted s", "actual s", "error"):
        table.add_column(col)
    for n, pn, an, p, a, e in rows:
        table.add_row(str(n), f"{pn:.1f}", f"{an:.1f}", f"{p:.1f}", f"{a:.1f}", f"{e:+.1%}")
    console.print(table)
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `flash-restore estimate` (severity "
             f"stage + the calibration table in models/calibration.json) against the restore job's "
             f"`stages.solve.busy_seconds`, local engine, solver `{cfg.solver.name}`, batch {batch_size}. "
             f"Target: within ±{TARGET:.0%}.", "",
             "| samples | predicted mean NFE | actual mean NFE | predicted solve s | actual solve s | error | verdict |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {pn:.1f} | {an:.1f} | {p:.1f} | {a:.1f} | {e:+.1%} | {'met' if abs(e) <= TARGET else 'missed'} |"
              for n, pn, an, p, a, e in rows]
    lines += ["", f"Command: `flash-restore bench estimate --sizes {sizes} --batch-size {batch_size}` "
              "(after `flash-restore bench calibrate`)."]
    write_section(Path(write), "`flash-restore bench estimate`", lines)


def bench_budget(
    samples: int = typer.Option(48, "--samples", help="Archive size"),
    fraction: float = typer.Option(0.5, "--fraction", help="Budget as a fraction of the predicted solve time"),
    batch_size: int = typer.Option(8, "--batch-size"),
    config: Optional[str] = typer.Option(None, "--config"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Run with --budget-hours set to a fraction of the prediction, then resume: overshoot (target ≤ 10 %)."""
    from workers.job_config import build_config

    from dataclasses import replace

    from pipeline.io.outputs import OutputStore
    from workers.execute import execute

    cfg = build_config(config, None, False, batch_size, None, None, "local", None, set_)
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-budget-"))
    archive = make_archive(str(SAMPLE_ARCHIVE), samples, tmp / "archive")
    prediction, _ = predicted(cfg, archive)
    budget_s = fraction * prediction
    out = str(tmp / "out")
    first = execute(replace(cfg, execution=replace(cfg.execution, budget_hours=budget_s / 3600)), archive, out)
    spent = first["stages"]["solve"]["busy_seconds"]
    rest = execute(cfg, archive, out)
    rows = OutputStore(out).read_metrics().to_pylist()
    complete = len(rows) == len({r["key"] for r in rows}) == samples and all(r["status"] == "ok" for r in rows)
    over = spent / budget_s - 1
    table = Table(title="flash-restore bench budget")
    for col in ("budget s", "solve s spent", "overshoot", "restored in run 1", "restored on resume", "complete"):
        table.add_column(col)
    table.add_row(f"{budget_s:.1f}", f"{spent:.1f}", f"{over:+.1%}", str(first["ok"]), str(rest["ok"]), str(complete))
    console.print(table)
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: a {samples}-sample archive, "
             f"`--budget-hours` set to {fraction:.0%} of its predicted solve time ({prediction:.1f} s), local "
             f"engine, batch {batch_size}; then the same job rerun without a budget. The scheduler starts a "
             "batch only if it and the running ones fit, at the seconds per sample·step measured so far, and "
             "when the next batch does not fit runs its cheapest samples that do. "
             "Target: overshoot ≤ 10 %, and the rerun completes the job.", "",
             "| budget s | solve s spent | overshoot | restored in run 1 | restored on resume | one row per key, all ok |",
             "|---|---|---|---|---|---|",
             f"| {budget_s:.1f} | {spent:.1f} | {over:+.1%} | {first['ok']} | {rest['ok']} | {complete} |", "",
             f"Command: `flash-restore bench budget --samples {samples} --fraction {fraction} "
             f"--batch-size {batch_size}`."]
    write_section(Path(write), "`flash-restore bench budget`", lines)
