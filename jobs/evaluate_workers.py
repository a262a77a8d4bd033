"""`evaluate --jobs N`: compute the cells in N worker processes of one torch thread each.

Why: on a small CPU one evaluation gains little from more threads (a solver step on 64-px
crops does not parallelise well), and two evaluations with two threads each on two cores ran
several times slower than one alone, while one thread per process on every core halved the
wall time of docs/reproduction.md. Cells of one task and solver go to the same worker: an
equal-NFE cell runs its Flash cell first for its NFE, and two workers would both compute it.
Each worker has its own work folder; the cell store is written cell by cell, and the parent
writes the report once they are done.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.reproduction.suite import Cell

MODE_COST = {"baseline": 10.0, "flash": 2.0, "equal_nfe": 1.0}   # rough CPU cost of a default cell


def cost(cell: Cell) -> float:
    if cell.solver == "none":
        return 0.1
    if cell.fixed_start is not None:
        return 1.0 + cell.fixed_start / 100
    return MODE_COST.get(cell.mode, 1.0)


def partition(cells: list[Cell], jobs: int) -> list[list[Cell]]:
    """Cells split into at most `jobs` lists, each task × solver whole, costliest groups first."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.task, c.solver), []).append(c)
    parts: list[list[Cell]] = [[] for _ in range(jobs)]
    load = [0.0] * jobs
    for group in sorted(groups.values(), key=lambda g: -sum(map(cost, g))):
        i = load.index(min(load))
        parts[i] += group
        load[i] += sum(map(cost, group))
    return [p for p in parts if p]


PER_WORKER = {"cell", "reuse", "report_only", "work", "threads", "jobs", "worker"}   # set by run_workers


def worker_options(params: dict) -> list[str]:
    """The parent's evaluate options (its typer params) that every worker shares, as flags."""
    out = []
    for name, value in params.items():
        if name in PER_WORKER or value is None or value is False:
            continue
        flag = f"--{name.replace('_', '-')}"
        out.append(flag if value is True else f"{flag}={value}")
    return out


def run_workers(parts: list[list[Cell]], options: list[str], work: Path, force: bool, command: str) -> list[int]:
    """Run one `evaluate --worker` process per part (their output goes to this console);
    returns their exit codes. A worker records `command` in its cells, not its own."""
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}   # numpy / BLAS too, not only torch
    procs = []
    for i, part in enumerate(parts):
        argv = [sys.executable, "-m", "jobs.cli", "evaluate", *options, "--work", str(work / f"worker-{i}"),
                "--threads", "1", "--worker", command, *([] if force else ["--reuse"])]
        argv += [a for c in part for a in ("--cell", c.id)]
        procs.append(subprocess.Popen(argv, env=one_thread))
    return [p.wait() for p in procs]
