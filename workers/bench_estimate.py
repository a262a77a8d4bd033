"""`bench estimate` and `bench budget`: predicted against actual solve time, and budget adherence.

For each archive size `estimate_vs_actual` runs the estimate (`workers.estimate`: severity
only, the calibration table) and then the restore job itself, and compares
`predicted_solve_seconds` with the job's `stages.solve.busy_seconds`. `budget_run` runs a
job with `execution.budget_hours` at a fraction of the prediction, then resumes it.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from pipeline.io.outputs import OutputStore
from pipeline.io.shards import list_shards, make_archive

from .estimate import build_report
from .execute import execute

TARGET = 0.15         # predicted within ±15 % of the actual solve seconds
SOURCE_SAMPLES = 32   # the committed sample archive: that size is restored as it is


def predicted(cfg, archive: str) -> tuple[float, dict]:
    """The estimate's predicted solve seconds for the config's solver (and the solver's report)."""
    report = build_report(cfg, archive, list_shards(archive))["solvers"][cfg.solver.name]
    if isinstance(report["predicted_solve_seconds"], str):
        raise ValueError(report["predicted_solve_seconds"])
    return report["predicted_solve_seconds"], report


def estimate_vs_actual(cfg, source: str, sizes: list[int], log: Callable[[str], None] = print) -> list[tuple]:
    """(samples, predicted mean NFE, actual mean NFE, predicted s, actual s, relative error) per size."""
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-estimate-"))
    rows = []
    for n in sizes:
        archive = source if n == SOURCE_SAMPLES else make_archive(source, n, str(tmp / f"a{n}"))
        seconds, report = predicted(cfg, archive)
        summary = execute(cfg, archive, str(tmp / f"out{n}"))
        actual = summary["stages"]["solve"]["busy_seconds"]
        rows.append((n, report["mean_nfe"], summary["mean_nfe"], seconds, actual, seconds / actual - 1))
        log(f"{n} samples: predicted {seconds:.1f} s, actual {actual:.1f} s")
    return rows


def estimate_section(rows: list[tuple], cfg, command: str) -> list[str]:
    """The `bench estimate` section of docs/benchmarks.md."""
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `flash-restore estimate` (severity "
             f"stage + the calibration table in models/calibration.json) against the restore job's "
             f"`stages.solve.busy_seconds`, local engine, solver `{cfg.solver.name}`, batch "
             f"{cfg.execution.batch_size}. Target: within ±{TARGET:.0%}.", "",
             "| samples | predicted mean NFE | actual mean NFE | predicted solve s | actual solve s | error | verdict |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {pn:.1f} | {an:.1f} | {p:.1f} | {a:.1f} | {e:+.1%} | {'met' if abs(e) <= TARGET else 'missed'} |"
              for n, pn, an, p, a, e in rows]
    return lines + ["", f"Command: `{command}` (after `flash-restore bench calibrate`)."]


def budget_run(cfg, source: str, samples: int, fraction: float) -> dict:
    """A job with `fraction` of its predicted solve time as budget, then the same job resumed."""
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-budget-"))
    archive = make_archive(source, samples, str(tmp / "archive"))
    prediction, _ = predicted(cfg, archive)
    budget_s = fraction * prediction
    out = str(tmp / "out")
    first = execute(replace(cfg, execution=replace(cfg.execution, budget_hours=budget_s / 3600)), archive, out)
    spent = first["stages"]["solve"]["busy_seconds"]
    rest = execute(cfg, archive, out)
    rows = OutputStore(out).read_metrics().to_pylist()
    complete = len(rows) == len({r["key"] for r in rows}) == samples and all(r["status"] == "ok" for r in rows)
    return {"prediction": prediction, "budget_s": budget_s, "spent": spent, "over": spent / budget_s - 1,
            "first_ok": first["ok"], "rest_ok": rest["ok"], "complete": complete}


def budget_section(r: dict, cfg, samples: int, fraction: float, command: str) -> list[str]:
    """The `bench budget` section of docs/benchmarks.md."""
    return [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: a {samples}-sample archive, "
            f"`--budget-hours` set to {fraction:.0%} of its predicted solve time ({r['prediction']:.1f} s), local "
            f"engine, batch {cfg.execution.batch_size}; then the same job rerun without a budget. The scheduler "
            "starts a batch only if it and the running ones fit, at the seconds per sample·step measured so far, "
            "and when the next batch does not fit runs its cheapest samples that do. "
            "Target: overshoot ≤ 10 %, and the rerun completes the job.", "",
            "| budget s | solve s spent | overshoot | restored in run 1 | restored on resume | one row per key, all ok |",
            "|---|---|---|---|---|---|",
            f"| {r['budget_s']:.1f} | {r['spent']:.1f} | {r['over']:+.1%} | {r['first_ok']} | {r['rest_ok']} | "
            f"{r['complete']} |", "",
            f"Command: `{command}`."]
