"""Writer actor: the job's one committer (`pipeline.io.part_writer.PartWriter`) as a Ray actor.

Not restartable: it holds uncommitted rows, and restarting it would hide their loss, so a
dead writer fails the job; committed parts stay and a rerun resumes.
"""
from __future__ import annotations

import os

from pipeline.io.part_writer import PartWriter

from .placement import new_incarnation


class Writer(PartWriter):
    def __init__(self, output_url: str, part_size: int, lineage: dict | None = None):
        super().__init__(output_url, part_size, lineage)
        self.incarnation = new_incarnation()

    def ping(self) -> str:
        return self.incarnation

    def process(self) -> dict:
        """Where this writer's process runs: the driver waits for exactly this process to end
        before a stopped job returns (`workers.ray_backend.wait_until_gone`)."""
        # lazy: Ray loads only where the Ray engine runs
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
