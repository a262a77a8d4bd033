"""Severity actor: ẑ, σ̂² and the start step per sample (`pipeline.execution.stages.severity_stage`).

One model load per actor. It receives records plus the readers' payloads (Ray resolves the
references), and returns the records with their start steps for the scheduler and the
estimates, which stay in the object store for the solvers.
"""
from __future__ import annotations

from pipeline.execution.config import RestoreConfig
from pipeline.execution.records import SampleRecord
from pipeline.execution.restorer import build_restorer
from pipeline.execution.stages import severity_stage

from .placement import new_incarnation, set_threads


class SeverityStage:
    def __init__(self, cfg: RestoreConfig, device: str = "cpu", num_cpus: float = 1.0):
        set_threads(num_cpus)
        self.restorer = build_restorer(cfg, device=device)
        self.incarnation = new_incarnation()

    def ping(self) -> str:
        return self.incarnation

    def run(self, records: list[SampleRecord], *payloads: dict) -> tuple[dict, dict]:
        return severity_stage(self.restorer, records, *payloads)
