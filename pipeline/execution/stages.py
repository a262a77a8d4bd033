"""The stages of a restore job, written once: read+validate → severity → solve → write.

Each stage is a pure function of its inputs (plus the models it is handed) and returns two
things: a small summary the scheduler reads (records, error rows, seconds) and a payload
dict key → tensors that the next stage receives by reference. A backend decides where a
stage runs (in this process, or in a Ray actor) and how it is retried; the functions here
are the same for both, so both isolate bad samples, name keyless errors and account time
the same way. Bucketing and dedupe live in `pipeline.execution.scheduler`, commits in
`pipeline.io.part_writer`.
"""
from __future__ import annotations

import itertools
import time
from typing import Iterator

from pipeline.io.outputs import error_for
from pipeline.execution.records import SampleRecord, pick, record_of
from pipeline.restoration.items import Estimated, Prepared
from pipeline.restoration.restore import isolating
from pipeline.io.samples import SampleError
from pipeline.io.shards import iter_samples, keyless_name
from pipeline.execution.validation import SampleValidator


def record_key(item: SampleRecord | dict) -> str:
    return item.key if isinstance(item, SampleRecord) else item["key"]


class ShardCursor:
    """Items start..start+n of a shard, reusing the open stream when reads are sequential;
    a retried or restarted read reopens the shard and skips to `start` (idempotent)."""

    def __init__(self, limits: dict):
        self.limits = limits
        self.shard: str | None = None
        self.pos = 0
        self.it: Iterator | None = None

    def take(self, shard: str, start: int, n: int) -> list:
        if self.shard != shard or self.pos != start or self.it is None:
            self.it = iter_samples(shard, **self.limits)
            for _ in itertools.islice(self.it, start):
                pass
            self.shard, self.pos = shard, start
        items = list(itertools.islice(self.it, n))
        self.pos += len(items)
        if len(items) < n:
            self.shard, self.it = None, None
        return items


def read_stage(cursor: ShardCursor, validator: SampleValidator, request: tuple[str, int, int]) -> tuple[dict, dict]:
    """Read and validate a chunk → ({records: [SampleRecord | error row], done, n, seconds}, {key: Prepared})."""
    shard, start, n = request
    t0 = time.perf_counter()
    items = cursor.take(shard, start, n)
    records: list = []
    payload: dict[str, Prepared] = {}
    for item in items:
        if isinstance(item, SampleError):
            records.append(error_for(keyless_name(shard, item), shard, item))
            continue
        try:
            prepared = validator.prepare(item)
        except SampleError as exc:
            records.append(error_for(item.key, shard, exc))
            continue
        payload.setdefault(prepared.key, prepared)  # a key twice in one shard is a duplicate error already
        records.append(record_of(prepared))
    summary = {"records": records, "done": len(items) < n, "n": len(items), "seconds": time.perf_counter() - t0}
    return summary, payload


def severity_stage(restorer, records: list[SampleRecord], *payloads: dict) -> tuple[dict, dict]:
    """σ̂² and start step per sample → ({records, rows, seconds}, {key: Estimated}).

    A batch whose estimate fails is redone one sample at a time, so only the offending
    sample becomes an error row."""
    t0 = time.perf_counter()
    prepared: list[Prepared] = pick(records, payloads)
    out = isolating(restorer.estimate, prepared, lambda p, exc: error_for(p.key, p.shard, exc))
    estimates = [e for e in out if isinstance(e, Estimated)]
    rows = [r for r in out if isinstance(r, dict)]
    summary = {"records": [record_of(e) for e in estimates], "rows": rows, "seconds": time.perf_counter() - t0}
    return summary, {e.key: e for e in estimates}


def solve_stage(restorer, records: list[SampleRecord], *payloads: dict) -> tuple[dict, list]:
    """Restore one exact batch → ({n, seconds}, [(row, png, meta)]); a failing batch is
    retried one by one inside `Restorer.solve_isolating`."""
    t0 = time.perf_counter()
    batch: list[Estimated] = pick(records, payloads)
    results = restorer.solve_isolating(batch)
    return {"n": len(batch), "seconds": time.perf_counter() - t0}, results
