"""The in-process backend: the job's stages run inline, one call at a time.

It offers the scheduler the same pool interface as the Ray backend (`submit`, `finish`,
`wait`, a writer), but a call runs when it is submitted and its "references" are the
payload objects themselves. Used for small archives, tests and debugging; outputs equal
the Ray backend's (batched solves are exact). One `Restorer` serves severity and solve.
`execution.solver_threads` sets torch's threads for the solve stage only (the process's own
setting comes back after each call); the options that only place Ray actors are refused by
the config (`pipeline.execution.config.RAY_ONLY`).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from pipeline.execution.config import RestoreConfig
from pipeline.io.part_writer import PartWriter
from pipeline.execution.restorer import build_restorer
from pipeline.restoration.restore import Restorer
from pipeline.execution.scheduler import CallPool
from pipeline.execution.stages import ShardCursor, read_stage, severity_stage, solve_stage
from pipeline.execution.validation import SampleValidator, read_limits


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` torch threads (None: leave them), then restore the caller's setting."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Done:
    """A finished inline call (hashable by identity, like a Ray object ref)."""

    def __init__(self, args: tuple, value: Any):
        self.args, self.value = args, value


class InlinePool(CallPool):
    size, max_attempts, restarts, resubmitted, last_error = 1, 1, 0, 0, None

    def __init__(self, fn: Callable[..., tuple], depth: int):
        self.fn, self.depth = fn, depth
        self.handles = {0: fn}
        self.calls: dict[Done, None] = {}

    def ensure(self) -> None:
        pass

    def free(self) -> bool:
        return len(self.calls) < self.depth

    def submit(self, args: tuple, prefer: int | None = None, force: bool = False) -> int:
        self.calls[Done(args, self.fn(*args))] = None
        return 0

    def finish(self, ref: Done) -> tuple[str, tuple, Any, list]:
        del self.calls[ref]
        summary, payload = ref.value
        return "ok", ref.args, summary, [payload]


class LocalBackend:
    engine = "local"
    max_wait_s = None  # nothing waits on a partial bucket in process: it is flushed at the end

    def __init__(self, cfg: RestoreConfig, select: Callable[[str], bool] | None = None):
        self.cfg = cfg
        self.select = select  # read only the keys it accepts (`estimate --sample-fraction`)
        self.writer: PartWriter | None = None
        self.restorer: Restorer | None = None  # the backend's, once started (estimate reads its sampler and device)

    def start(self) -> None:
        """Load and check every model before anything is written."""
        self.restorer = restorer = build_restorer(self.cfg)
        limits = {**read_limits(self.cfg), **({"select": self.select} if self.select else {})}
        cursor, validator = ShardCursor(limits), SampleValidator(self.cfg)
        self.pools = {
            "reader": InlinePool(lambda request: read_stage(cursor, validator, request), depth=1),
            "severity": InlinePool(lambda *a: severity_stage(restorer, *a), depth=2),
            "solver": InlinePool(lambda *a: self._solve(restorer, *a), depth=2),
        }

    def _solve(self, restorer: Restorer, *args) -> tuple:
        with torch_threads(self.cfg.execution.solver_threads):
            return solve_stage(restorer, *args)

    def open_writer(self, output_url: str, lineage: dict | None = None) -> None:
        self.writer = PartWriter(output_url, self.cfg.execution.part_size, lineage)

    def wait(self, refs: list, timeout: float) -> list:
        return refs[:1]  # every inline call is already done

    def write(self, results) -> Done:
        return Done((), self.writer.add(results))

    def get_write(self, ref: Done) -> dict:
        return ref.value

    def finish_writes(self) -> dict:
        return self.writer.finish()

    def describe(self, stats, wall: float) -> dict:
        return {}

    def close(self) -> None:
        pass
