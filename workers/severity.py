"""Severity actor: prepares samples and estimates ẑ, σ̂² and the start step per sample.

One model load per actor (`Restorer`). A sample whose operator parameters are bad becomes
an error row; a chunk whose estimate fails is retried one sample at a time so only the
offending sample turns into an error row, as in the solver stage.
"""
from __future__ import annotations

import time

from pipeline.config import RestoreConfig
from pipeline.restore import Restorer
from pipeline.samples import Sample, SampleError

from .placement import new_incarnation, set_threads


class SeverityStage:
    def __init__(self, cfg: RestoreConfig, device: str = "cpu", num_cpus: float = 1.0):
        set_threads(num_cpus)
        self.restorer = Restorer(cfg, device=device)
        self.incarnation = new_incarnation()

    def ping(self) -> str:
        return self.incarnation

    def run(self, samples: list[Sample]) -> dict:
        """→ {"estimates": [Estimated], "rows": [error rows], "seconds"}."""
        t0 = time.perf_counter()
        prepared, rows = [], []
        for s in samples:
            try:
                prepared.append(self.restorer.prepare(s))
            except SampleError as exc:
                rows.append(Restorer.error(s.key, s.shard, exc))
        try:
            estimates = self.restorer.estimate(prepared) if prepared else []
        except Exception:  # isolate the bad sample
            estimates = []
            for p in prepared:
                try:
                    estimates += self.restorer.estimate([p])
                except Exception as exc:  # noqa: BLE001 - becomes an error row, the job goes on
                    rows.append(Restorer.error(p.key, p.shard, exc))
        return {"estimates": estimates, "rows": rows, "seconds": time.perf_counter() - t0}
