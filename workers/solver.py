"""Solver actor: restores one exact batch (one operator family and size) per call.

`solve` returns two objects (Ray num_returns=2): a small summary the coordinator reads and
the results (rows + PNGs) it hands to the writer by reference, so images never pass
through the driver. A failing batch is retried one by one, as in the local engine.
"""
from __future__ import annotations

import os
import time

from pipeline.config import RestoreConfig
from pipeline.restore import Estimated, Restorer

from .placement import new_incarnation, set_threads


class SolverStage:
    def __init__(self, cfg: RestoreConfig, device: str = "cpu", num_cpus: float = 1.0):
        # the CPU reservation is fractional so small nodes cannot deadlock, but a CPU solver
        # is the stage that computes: give it the node's cores, not Ray's OMP_NUM_THREADS=1
        ex = cfg.execution
        set_threads(num_cpus if device != "cpu" else
                    ex.solver_threads or max(1, (os.cpu_count() or 1) // ex.solver_actors))
        self.restorer = Restorer(cfg, device=device)
        self.incarnation = new_incarnation()
        self.calls = 0

    def ping(self) -> str:
        return self.incarnation

    def solve(self, batch: list[Estimated]) -> tuple[dict, list]:
        self.calls += 1
        crash_once(self.calls)
        t0 = time.perf_counter()
        results = self.restorer.solve_isolating(batch)
        return {"n": len(batch), "seconds": time.perf_counter() - t0, "incarnation": self.incarnation}, results


def crash_once(calls: int) -> None:
    """Fault injection for tests: FLASH_FAULT_SOLVER_CRASH="N:/path/marker" kills the process
    on its (N+1)-th batch, once per marker file, as a lost node or OOM kill would."""
    spec = os.environ.get("FLASH_FAULT_SOLVER_CRASH")
    if not spec:
        return
    after, marker = spec.split(":", 1)
    if calls > int(after) and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
