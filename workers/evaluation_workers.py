"""`evaluate --jobs N`: which cells go to which worker process.

Cells of one task and solver go to the same worker: an equal-NFE cell runs its Flash cell
first for its NFE, and two workers would both compute it. Groups are dealt costliest first
to the least loaded worker, by a rough CPU cost per mode.
"""
from __future__ import annotations

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
