"""Shard reader actor: reads and validates a shard's samples in chunks (`pipeline.execution.stages.read_stage`).

Why chunks: the scheduler pulls one chunk at a time per reader (bounded prefetch), so no
shard is ever held whole. A request names its position, so a restarted reader (or a
retried call) reopens the shard and skips to it. It returns two objects: the records the
scheduler reads and the prepared samples, which stay in the object store for severity.
"""
from __future__ import annotations

from pipeline.execution.config import RestoreConfig
from pipeline.execution.stages import ShardCursor, read_stage
from pipeline.execution.validation import SampleValidator

from .placement import new_incarnation, set_threads


class ShardReader:
    def __init__(self, cfg: RestoreConfig, limits: dict, num_cpus: float = 1.0):
        set_threads(num_cpus)
        self.cursor, self.validator = ShardCursor(limits), SampleValidator(cfg)
        self.incarnation = new_incarnation()

    def ping(self) -> str:
        return self.incarnation

    def read(self, request: tuple[str, int, int]) -> tuple[dict, dict]:
        return read_stage(self.cursor, self.validator, request)
