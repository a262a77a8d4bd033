"""Solver actor: restores one exact batch (one family and image size) per call.

It returns two objects: a small summary the scheduler reads and the results (rows + PNGs),
which the writer fetches by reference, so images never pass through the driver.
"""
from __future__ import annotations

import os

from pipeline.execution.config import RestoreConfig
from pipeline.execution.records import SampleRecord
from pipeline.execution.restorer import build_restorer
from pipeline.execution.stages import solve_stage

from .placement import new_incarnation, set_threads


class SolverStage:
    def __init__(self, cfg: RestoreConfig, device: str = "cpu", num_cpus: float = 1.0):
        # the CPU reservation is fractional so small nodes cannot deadlock, but a CPU solver
        # is the stage that computes: give it the node's cores, not Ray's OMP_NUM_THREADS=1
        ex = cfg.execution
        set_threads(num_cpus if device != "cpu" else
                    ex.solver_threads or max(1, (os.cpu_count() or 1) // ex.solver_actors))
        self.restorer = build_restorer(cfg, device=device)
        self.incarnation = new_incarnation()

    def ping(self) -> str:
        return self.incarnation

    def solve(self, records: list[SampleRecord], *payloads: dict) -> tuple[dict, list]:
        return solve_stage(self.restorer, records, *payloads)
