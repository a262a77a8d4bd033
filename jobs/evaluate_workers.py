"""`evaluate --jobs N`: compute the cells in N worker processes of one torch thread each.

Why: on a small CPU one evaluation gains little from more threads (a solver step on 64-px
crops does not parallelise well), and two evaluations with two threads each on two cores ran
several times slower than one alone, while one thread per process on every core halved the
wall time of docs/reproduction.md. Which cells a worker gets: `workers.evaluation_workers`.
Each worker has its own work folder; the cell store is written cell by cell, and the parent
writes the report once they are done.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.reproduction.suite import Cell

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
