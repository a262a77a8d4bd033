"""Shard reader actor: streams a shard's samples in chunks, decoded and validated.

Why chunks: the coordinator pulls one chunk at a time per reader (bounded prefetch), so
no shard is ever held whole. `read((shard, start, n))` names its position, so a restarted
reader (or a retried call) reopens the shard and skips to it: reading is idempotent.
Bad samples become error rows here (`SampleError` does not pickle through its args).
"""
from __future__ import annotations

import itertools
import time

from pipeline.restore import Restorer
from pipeline.samples import Sample, SampleError
from pipeline.shards import iter_samples

from .placement import new_incarnation, set_threads


def item_to_wire(item: Sample | SampleError, shard: str) -> Sample | dict:
    """A Sample stays; a SampleError becomes its error row (a keyless one is named after the shard)."""
    if isinstance(item, Sample):
        return item
    key = item.key or f"{shard}#{item.kind}"  # e.g. a corrupt tar: one row for the shard
    return Restorer.error(key, shard, item)


def wire_key(item: Sample | dict) -> str:
    return item.key if isinstance(item, Sample) else item["key"]


class ShardReader:
    def __init__(self, limits: dict, num_cpus: float = 1.0):
        set_threads(num_cpus)
        self.limits = limits
        self.incarnation = new_incarnation()
        self.shard, self.pos, self.it = None, 0, None

    def ping(self) -> str:
        return self.incarnation

    def read(self, request: tuple[str, int, int]) -> dict:
        """Items start..start+n of `shard`; `done` when the shard is exhausted."""
        shard, start, n = request
        t0 = time.perf_counter()
        if self.shard != shard or self.pos != start or self.it is None:
            self.it = iter_samples(shard, **self.limits)
            for _ in itertools.islice(self.it, start):
                pass
            self.shard, self.pos = shard, start
        items = [item_to_wire(x, shard) for x in itertools.islice(self.it, n)]
        self.pos += len(items)
        done = len(items) < n
        if done:
            self.shard, self.it = None, None
        return {"items": items, "done": done, "seconds": time.perf_counter() - t0}
