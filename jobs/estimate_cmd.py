"""`flash-restore estimate`: the cost of a restore job before running it.

Runs only the severity stage (one encoder pass per sample, far cheaper than a solve), turns
each predicted start step into its NFE, and prices it with a per-step cost measured here on
one batch (or a given cost per image·step, e.g. measured on the target GPU). Prints the
predicted NFE histogram, the saving against the baseline schedule, and compute hours.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import build_config, console, preflight


def measure_step_seconds(restorer, prepared) -> float:
    """Seconds per image·step: one batch solved from start step 0 (a single guided step)."""
    batch = [replace(e, start_step=0) for e in restorer.estimate(prepared)]
    restorer.solve(batch)  # warm-up (allocations, first-call overheads)
    t0 = time.perf_counter()
    restorer.solve(batch)
    return (time.perf_counter() - t0) / len(batch)


def estimate(
    input: str = typer.Option(..., "--input", help="WebDataset shards: folder, glob, brace pattern; local or s3://"),
    config: Optional[str] = typer.Option(None, "--config"),
    solver: Optional[str] = typer.Option(None, "--solver"),
    step_seconds: Optional[float] = typer.Option(None, "--step-seconds",
                                                 help="Cost of one image·step; default: measured here"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only look at the first N samples"),
    report: Optional[str] = typer.Option(None, "--report", help="Write per-sample predictions as Parquet here"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Config override section.key=value"),
):
    """Predict start steps, NFE and compute for an archive without restoring it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.restore import Restorer
    from pipeline.samples import SampleError
    from pipeline.shards import iter_samples
    from pipeline.validation import read_limits

    try:
        cfg = build_config(config, solver, False, None, None, None, "local", None, set_)
        shards = preflight(cfg, input)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    restorer = Restorer(cfg)
    prepared, errors, t0 = [], Counter(), time.perf_counter()
    for shard in shards:
        for item in iter_samples(shard, **read_limits(cfg)):
            if limit is not None and len(prepared) + sum(errors.values()) >= limit:
                break
            try:
                if isinstance(item, SampleError):
                    raise item
                prepared.append(restorer.prepare(item))
            except SampleError as exc:
                errors[exc.kind] += 1
    estimates = restorer.estimate(prepared) if prepared else []
    seconds_severity = time.perf_counter() - t0
    full = restorer.solver.sampler.num_steps
    nfe = [e.start_step + 1 for e in estimates]
    per_step = step_seconds if step_seconds is not None else (
        measure_step_seconds(restorer, prepared[: cfg.execution.batch_size]) if prepared else 0.0)
    total = sum(nfe)
    table = Table(title=f"flash-restore estimate: {cfg.solver.name} on {restorer.device}")
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [("samples", len(estimates)), ("invalid samples", sum(errors.values())),
            ("mean predicted NFE", f"{total / max(len(nfe), 1):.1f}"), ("baseline NFE per sample", full),
            ("predicted saving vs baseline", f"{full * len(nfe) / max(total, 1):.1f}×"),
            ("seconds per image·step", f"{per_step:.4f}" + ("" if step_seconds is not None else " (measured here)")),
            ("predicted solve hours", f"{total * per_step / 3600:.3f}"),
            ("baseline solve hours", f"{full * len(nfe) * per_step / 3600:.3f}"),
            ("severity stage seconds (this run)", f"{seconds_severity:.1f}")]
    for label, value in rows:
        table.add_row(label, str(value))
    hist = Counter((n // 10) * 10 for n in nfe)
    for b in sorted(hist):
        table.add_row(f"  NFE {b}-{b + 9}", str(hist[b]))
    for kind, n in sorted(errors.items()):
        table.add_row(f"  invalid: {kind}", str(n))
    console.print(table)
    if report:
        pq.write_table(pa.table({"key": [e.key for e in estimates], "shard": [e.prepared.shard for e in estimates],
                                 "operator": [e.prepared.params["operator"] for e in estimates],
                                 "sigma2_hat": [e.sigma2 for e in estimates],
                                 "start_step": [e.start_step for e in estimates], "nfe": nfe}), report)
        console.print(f"per-sample predictions: {report}")
